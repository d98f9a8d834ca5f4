//! `PUT /v1/config`: a partial settings document merged into the current one, then
//! checked. Merging follows JSON Merge Patch (RFC 7396), which operators know from
//! other APIs: objects merge key by key (`{"rates": {"marketing": 0.8}}` changes one
//! price), `null` removes a key (`{"country_rates": {"1": null}}` drops a prefix), and
//! anything else replaces. A base price cannot be removed: without it a category would
//! silently cost nothing, so `null` there is refused.

use serde_json::{Map, Value};

use super::category::Category;
use super::settings::{Settings, SmsDirection};

pub const MAX_COOLDOWN_HOURS: u32 = 168;

/// The highest price a rate card takes (CONTRACT §6.6): far above any real price, far
/// below what could make a cost counter overflow to infinity.
pub const MAX_PRICE: f64 = 1_000_000.0;

/// A rejected patch: the field it names (dotted path) and why.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PatchError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PatchError {
    PatchError {
        field: field.into(),
        message: message.into(),
    }
}

/// RFC 7396 merge of `patch` into `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The settings after applying `patch` to `current`, checked; `updated_at` is left as it
/// was (the caller stamps it when something changed). `updated_at` in the patch is
/// ignored, so a document read with GET can be sent back whole.
pub fn apply(current: &Settings, patch: &Value) -> Result<Settings, PatchError> {
    let Value::Object(fields) = patch else {
        return Err(err("body", "must be a JSON object of settings"));
    };
    let mut doc = serde_json::to_value(current).map_err(|e| err("body", e.to_string()))?;
    let known = doc
        .as_object()
        .expect("settings serialise to an object")
        .clone();
    let mut patch = fields.clone();
    patch.remove("updated_at");
    if let Some(unknown) = patch.keys().find(|k| !known.contains_key(*k)) {
        return Err(err(unknown.clone(), "is not a setting"));
    }
    refuse_nulls(&patch)?;
    merge(&mut doc, &Value::Object(patch));
    check_price_tables(&doc)?;
    let mut merged: Settings = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'));
        match missing {
            Some(name) => err(name, "may not be null"),
            None => err(path.trim_end_matches(".?"), inner),
        }
    })?;
    merged.updated_at = current.updated_at;
    validate(&merged)?;
    Ok(merged)
}

/// A setting cannot be removed, nor can a base price: without it a category or an SMS
/// direction would silently cost nothing.
fn refuse_nulls(patch: &Map<String, Value>) -> Result<(), PatchError> {
    if let Some((k, _)) = patch.iter().find(|(_, v)| v.is_null()) {
        return Err(err(k.clone(), "may not be null"));
    }
    for table in ["rates", "sms_rates"] {
        let Some(Value::Object(rates)) = patch.get(table) else {
            continue;
        };
        if let Some((k, _)) = rates.iter().find(|(_, v)| v.is_null()) {
            return Err(err(
                format!("{table}.{k}"),
                "may not be null: a base price cannot be removed (set 0 to make it free)",
            ));
        }
    }
    Ok(())
}

const CATEGORY_KEYS: &str = "is not a category (marketing, marketing_lite, utility, \
     authentication, authentication_international, service)";
const DIRECTION_KEYS: &str = "is not an SMS direction (outbound, inbound)";

fn is_category(k: &str) -> bool {
    Category::parse(k).is_some_and(|c| c.as_str() == k)
}

fn is_direction(k: &str) -> bool {
    SmsDirection::ALL.iter().any(|d| d.as_str() == k)
}

/// Names the offending key of a price table: serde cannot, as the tables are keyed by
/// an enum (its path shows `?` for the key).
fn check_price_table(
    field: &str,
    table: &Value,
    (known, unknown): (fn(&str) -> bool, &str),
) -> Result<(), PatchError> {
    let Value::Object(table) = table else {
        return Err(err(field, "must be an object of key → price"));
    };
    for (k, v) in table {
        if !known(k) {
            return Err(err(format!("{field}.{k}"), unknown));
        }
        if !v.is_number() {
            return Err(err(format!("{field}.{k}"), "must be a number"));
        }
    }
    Ok(())
}

fn check_price_tables(doc: &Value) -> Result<(), PatchError> {
    for (base, countries, keys) in [
        (
            "rates",
            "country_rates",
            (is_category as fn(&str) -> bool, CATEGORY_KEYS),
        ),
        (
            "sms_rates",
            "sms_country_rates",
            (is_direction, DIRECTION_KEYS),
        ),
    ] {
        check_price_table(base, &doc[base], keys)?;
        let Value::Object(tables) = &doc[countries] else {
            return Err(err(countries, "must be an object of prefix → prices"));
        };
        for (prefix, t) in tables {
            check_price_table(&format!("{countries}.{prefix}"), t, keys)?;
        }
    }
    Ok(())
}

fn check_price(field: String, price: f64) -> Result<(), PatchError> {
    if (0.0..=MAX_PRICE).contains(&price) {
        Ok(())
    } else {
        Err(err(field, "must be a number from 0 to 1000000"))
    }
}

/// The rules a stored settings document obeys.
pub fn validate(s: &Settings) -> Result<(), PatchError> {
    if s.template_cooldown_hours > MAX_COOLDOWN_HOURS {
        return Err(err(
            "template_cooldown_hours",
            format!("must be from 0 to {MAX_COOLDOWN_HOURS}"),
        ));
    }
    check_currency("currency", &s.currency)?;
    check_currency("sms_currency", &s.sms_currency)?;
    for (c, p) in &s.rates {
        check_price(format!("rates.{}", c.as_str()), *p)?;
    }
    for (prefix, table) in &s.country_rates {
        check_prefix("country_rates", prefix)?;
        for (c, p) in table {
            check_price(format!("country_rates.{prefix}.{}", c.as_str()), *p)?;
        }
    }
    for (d, p) in &s.sms_rates {
        check_price(format!("sms_rates.{}", d.as_str()), *p)?;
    }
    for (prefix, table) in &s.sms_country_rates {
        check_prefix("sms_country_rates", prefix)?;
        for (d, p) in table {
            check_price(format!("sms_country_rates.{prefix}.{}", d.as_str()), *p)?;
        }
    }
    Ok(())
}

fn check_currency(field: &str, code: &str) -> Result<(), PatchError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(err(
            field,
            "must be a 3-letter ISO 4217 code such as INR or USD",
        ))
    }
}

fn check_prefix(table: &str, prefix: &str) -> Result<(), PatchError> {
    let ok = (1..=6).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && !prefix.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(err(
            format!("{table}.{prefix}"),
            "must be a calling-code prefix of 1 to 6 digits, without + or a leading 0",
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(r: Result<Settings, PatchError>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn a_partial_patch_changes_only_what_it_names() {
        let s = apply(
            &Settings::default(),
            &json!({"template_cooldown_hours": 24, "rates": {"marketing": 0.8}}),
        )
        .unwrap();
        assert_eq!(s.template_cooldown_hours, 24);
        assert_eq!(s.rates[&Category::Marketing], 0.8);
        assert_eq!(s.rates[&Category::Utility], 0.35, "other prices stay");
        assert!(s.rate_limiting_enabled);
    }

    #[test]
    fn null_removes_a_country_prefix_and_lists_replace() {
        let with_us = apply(
            &Settings::default(),
            &json!({"country_rates": {"1": {"marketing": 0.025}, "44": {"utility": 0.02}},
                    "free_in_window_categories": ["service", "utility"]}),
        )
        .unwrap();
        assert_eq!(
            with_us.free_in_window_categories,
            vec![Category::Service, Category::Utility]
        );
        let without = apply(&with_us, &json!({"country_rates": {"1": null}})).unwrap();
        assert_eq!(without.country_rates.keys().collect::<Vec<_>>(), ["44"]);
    }

    #[test]
    fn a_whole_document_from_get_round_trips() {
        let current = Settings {
            updated_at: chrono::DateTime::from_timestamp_millis(1_000),
            ..Settings::default()
        };
        let doc = serde_json::to_value(&current).unwrap();
        assert_eq!(apply(&current, &doc).unwrap(), current);
    }

    #[test]
    fn bad_values_name_their_field() {
        let d = Settings::default();
        assert_eq!(field(apply(&d, &json!({"colour": 1}))), "colour");
        assert_eq!(
            field(apply(&d, &json!({"template_cooldown_hours": 169}))),
            "template_cooldown_hours"
        );
        assert_eq!(
            field(apply(&d, &json!({"template_cooldown_hours": -1}))),
            "template_cooldown_hours"
        );
        assert_eq!(
            field(apply(&d, &json!({"template_cooldown_hours": null}))),
            "template_cooldown_hours"
        );
        assert_eq!(
            field(apply(&d, &json!({"rates": {"marketing": -0.1}}))),
            "rates.marketing"
        );
        assert_eq!(
            field(apply(&d, &json!({"rates": {"promo": 1.0}}))),
            "rates.promo"
        );
        assert_eq!(
            field(apply(&d, &json!({"rates": {"utility": "cheap"}}))),
            "rates.utility"
        );
        assert_eq!(field(apply(&d, &json!({"currency": "inr"}))), "currency");
        assert_eq!(
            field(apply(&d, &json!({"free_in_window_categories": ["gift"]}))),
            "free_in_window_categories[0]"
        );
        assert_eq!(
            field(apply(
                &d,
                &json!({"country_rates": {"+1": {"utility": 0.1}}})
            )),
            "country_rates.+1"
        );
        assert_eq!(
            field(apply(&d, &json!({"rate_limiting_enabled": "yes"}))),
            "rate_limiting_enabled"
        );
        assert_eq!(field(apply(&d, &json!([1]))), "body");
    }

    #[test]
    fn prices_are_numbers_from_0_to_a_million() {
        let d = Settings::default();
        let price = |p: Value| apply(&d, &json!({"rates": {"marketing": p}}));
        assert_eq!(
            price(json!(MAX_PRICE)).unwrap().rates[&Category::Marketing],
            MAX_PRICE
        );
        assert!(price(json!(0)).is_ok());
        assert_eq!(field(price(json!(1_000_000.01))), "rates.marketing");
        assert_eq!(field(price(json!(f64::MAX))), "rates.marketing");
        assert_eq!(
            field(apply(
                &d,
                &json!({"country_rates": {"1": {"utility": 2e6}}})
            )),
            "country_rates.1.utility"
        );
    }

    #[test]
    fn null_removes_a_country_price_but_not_a_base_price() {
        let with_us = apply(
            &Settings::default(),
            &json!({"country_rates": {"1": {"marketing": 0.025, "utility": 0.004}}}),
        )
        .unwrap();
        let without_utility = apply(
            &with_us,
            &json!({"country_rates": {"1": {"utility": null}}}),
        )
        .unwrap();
        assert_eq!(
            without_utility.country_rates["1"],
            [(Category::Marketing, 0.025)].into()
        );
        let refused = apply(&with_us, &json!({"rates": {"marketing": null}})).unwrap_err();
        assert_eq!(refused.field, "rates.marketing");
    }

    #[test]
    fn the_sms_card_is_checked_like_the_whatsapp_one() {
        let d = Settings::default();
        let with_india = apply(
            &d,
            &json!({"sms_currency": "EUR", "sms_rates": {"inbound": 0.01},
                    "sms_country_rates": {"91": {"outbound": 0.0832}, "44": {"inbound": 0.0}}}),
        )
        .unwrap();
        assert_eq!(with_india.sms_currency, "EUR");
        assert_eq!(with_india.sms_rates[&SmsDirection::Outbound], 0.0079);
        assert_eq!(with_india.sms_rates[&SmsDirection::Inbound], 0.01);
        let without = apply(&with_india, &json!({"sms_country_rates": {"91": null}})).unwrap();
        assert_eq!(without.sms_country_rates.keys().collect::<Vec<_>>(), ["44"]);
        for (patch, named) in [
            (json!({"sms_rates": {"outbound": -1}}), "sms_rates.outbound"),
            (
                json!({"sms_rates": {"outbound": null}}),
                "sms_rates.outbound",
            ),
            (json!({"sms_rates": {"both": 1}}), "sms_rates.both"),
            (
                json!({"sms_rates": {"inbound": "free"}}),
                "sms_rates.inbound",
            ),
            (
                json!({"sms_country_rates": {"91": {"outbound": 2e6}}}),
                "sms_country_rates.91.outbound",
            ),
            (
                json!({"sms_country_rates": {"91": {"marketing": 1}}}),
                "sms_country_rates.91.marketing",
            ),
            (
                json!({"sms_country_rates": {"+91": {"inbound": 1}}}),
                "sms_country_rates.+91",
            ),
            (json!({"sms_country_rates": []}), "sms_country_rates"),
            (json!({"sms_currency": "usd"}), "sms_currency"),
            (json!({"sms_currency": null}), "sms_currency"),
        ] {
            assert_eq!(field(apply(&d, &patch)), named, "{patch}");
        }
    }

    #[test]
    fn a_document_stored_before_the_sms_card_reads_with_its_defaults() {
        let mut old = serde_json::to_value(Settings::default()).unwrap();
        for k in ["sms_currency", "sms_rates", "sms_country_rates"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let s: Settings = serde_json::from_value(old).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn lists_keep_each_value_once_in_order_of_first_appearance() {
        let s = apply(
            &Settings::default(),
            &json!({"free_in_window_categories": ["utility", "service", "utility", "service"]}),
        )
        .unwrap();
        assert_eq!(
            s.free_in_window_categories,
            [Category::Utility, Category::Service]
        );
    }

    #[test]
    fn cooldown_bounds_are_inclusive() {
        let d = Settings::default();
        assert!(apply(&d, &json!({"template_cooldown_hours": 0})).is_ok());
        assert!(apply(&d, &json!({"template_cooldown_hours": 168})).is_ok());
    }
}
