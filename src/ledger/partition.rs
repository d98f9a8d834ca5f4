//! Which writer an event goes to, when there are several. Each writer has its own queue
//! and commits its own batches, so two writers overlap their round trips and their
//! commits. Events are routed by the phone they concern (the recipient of an outbound
//! message, the sender of an inbound one), so that one message's statuses and its send
//! hook, and the session of their phone, are all written by one writer, in the order
//! they came: two batches running at once seldom touch the same row. When they do (a
//! status naming a group rather than the bot's recipient, another replica), the
//! conditional write-back refuses the later one and it runs again, as between replicas.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::events::Event;

/// The writer of `event`, of `writers` (at least one).
pub(super) fn writer_of(event: &Event, writers: usize) -> usize {
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
        // Touches no message and no session: any writer will do.
        Event::WebhookError(_) | Event::Ignored(_) => return 0,
    };
    // A fixed hasher: the same phone goes to the same writer for the life of the process.
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash % writers.max(1) as u64) as usize
}

/// `events` cut into one part per writer they go to, each part in the events' order.
pub(super) fn split(events: Vec<Event>, writers: usize) -> Vec<(usize, Vec<Event>)> {
    let mut parts: Vec<(usize, Vec<Event>)> = Vec::new();
    for event in events {
        let writer = writer_of(&event, writers);
        match parts.iter_mut().find(|(w, _)| *w == writer) {
            Some((_, part)) => part.push(event),
            None => parts.push((writer, vec![event])),
        }
    }
    parts
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
        })
    }

    fn id(e: &Event) -> &str {
        match e {
            Event::Status(s) => &s.message_id,
            _ => unreachable!("only statuses here"),
        }
    }

    #[test]
    fn one_phone_always_goes_to_one_writer_and_phones_spread_over_all() {
        let phones: Vec<String> = (0..200).map(|i| format!("+55119{i:08}")).collect();
        let mut used = [0usize; 3];
        for (i, p) in phones.iter().enumerate() {
            let w = writer_of(&status(&format!("wamid.{i}"), Some(p)), 3);
            assert_eq!(w, writer_of(&status("wamid.other", Some(p)), 3), "{p}");
            used[w] += 1;
        }
        assert!(used.iter().all(|n| *n > 30), "phones per writer: {used:?}");
        assert_eq!(writer_of(&status("wamid.x", Some(&phones[0])), 1), 0);
    }

    #[test]
    fn a_split_keeps_every_event_once_and_each_writers_events_in_order() {
        let events: Vec<Event> = (0..60)
            .map(|i| status(&format!("wamid.{i}"), Some(&format!("+2348{:09}", i % 7))))
            .collect();
        let parts = split(events.clone(), 2);
        assert_eq!(parts.len(), 2, "seven phones fill both writers");
        let mut seen: Vec<&str> = Vec::new();
        for (writer, part) in &parts {
            assert!(part.iter().all(|e| writer_of(e, 2) == *writer));
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
        assert_eq!(writer_of(&a, 4), writer_of(&status("wamid.a", None), 4));
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| writer_of(&status(&format!("wamid.{i}"), None), 4))
            .collect();
        assert!(spread.len() > 1);
    }
}
