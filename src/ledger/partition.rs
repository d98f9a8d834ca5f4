//! Which part of a large batch an event goes to, when the batch is cut into transactions
//! that run at once. Events go by the phone they concern (the recipient of an outbound
//! message, the sender of an inbound one), so that one message's statuses and its send
//! hook, and the session of their phone, are all in one part, in the order they came:
//! the parts seldom touch the same row. When they do (a status naming a group rather
//! than the bot's recipient), the conditional write-back refuses the later one and it
//! runs again, as between replicas.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::events::Event;

/// The part `event` goes to, of `parts` (at least one).
pub(super) fn part_of(event: &Event, parts: usize) -> usize {
    let key = match event {
        Event::Status(s) => s
            .phone
            .as_ref()
            .map_or(s.message_id.as_str(), |p| p.as_str()),
        Event::Sent(h) => h.phone.as_str(),
        Event::Inbound(m) => m
            .phone
            .as_ref()
            .map_or(m.message_id.as_str(), |p| p.as_str()),
        // Touches no message and no session: any part will do.
        Event::WebhookError(_) | Event::Ignored(_) | Event::Relay(_) => return 0,
    };
    // A fixed hasher: the same phone goes to the same part for the life of the process.
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash % parts.max(1) as u64) as usize
}

/// `events` cut into `parts` parts (some may be empty), each in the events' order.
pub(super) fn split(events: Vec<Event>, parts: usize) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = (0..parts.max(1)).map(|_| Vec::new()).collect();
    for event in events {
        out[part_of(&event, parts)].push(event);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::phone::Phone;
    use crate::domain::status::Status;
    use crate::domain::{Channel, Provider};
    use crate::events::StatusUpdate;

    fn status(id: &str, phone: Option<&str>) -> Event {
        Event::Status(StatusUpdate {
            provider: Provider::Meta,
            channel: Channel::Whatsapp,
            message_id: id.to_owned(),
            phone: phone.map(|p| Phone::parse(p).expect("a valid phone")),
            status: Status::Delivered,
            at_ms: None,
            pricing: None,
            error: None,
            segments: 0,
        })
    }

    fn id(e: &Event) -> &str {
        match e {
            Event::Status(s) => &s.message_id,
            _ => unreachable!("only statuses here"),
        }
    }

    #[test]
    fn one_phone_always_goes_to_one_part_and_phones_spread_over_all() {
        let phones: Vec<String> = (0..200).map(|i| format!("+55119{i:08}")).collect();
        let mut used = [0usize; 3];
        for (i, p) in phones.iter().enumerate() {
            let w = part_of(&status(&format!("wamid.{i}"), Some(p)), 3);
            assert_eq!(w, part_of(&status("wamid.other", Some(p)), 3), "{p}");
            used[w] += 1;
        }
        assert!(used.iter().all(|n| *n > 30), "phones per part: {used:?}");
        assert_eq!(part_of(&status("wamid.x", Some(&phones[0])), 1), 0);
    }

    #[test]
    fn a_split_keeps_every_event_once_and_each_parts_events_in_order() {
        let events: Vec<Event> = (0..60)
            .map(|i| status(&format!("wamid.{i}"), Some(&format!("+2348{:09}", i % 7))))
            .collect();
        let parts = split(events.clone(), 2);
        assert_eq!(parts.len(), 2);
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "seven phones fill both parts"
        );
        let mut seen: Vec<&str> = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            assert!(part.iter().all(|e| part_of(e, 2) == index));
            let order: Vec<usize> = part
                .iter()
                .map(|e| events.iter().position(|x| id(x) == id(e)).unwrap())
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "order kept: {order:?}"
            );
            seen.extend(part.iter().map(id));
        }
        seen.sort_unstable();
        let mut all: Vec<&str> = events.iter().map(id).collect();
        all.sort_unstable();
        assert_eq!(seen, all);
    }

    #[test]
    fn a_status_without_a_phone_goes_by_its_message_id() {
        let a = status("wamid.a", None);
        assert_eq!(part_of(&a, 4), part_of(&status("wamid.a", None), 4));
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| part_of(&status(&format!("wamid.{i}"), None), 4))
            .collect();
        assert!(spread.len() > 1);
    }
}
