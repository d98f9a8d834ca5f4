//! What Meta's `pricing_analytics` says each day cost, by pricing category
//! (`reference/provider-billing.md` §1).

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::{get_json, CallError, MetaApi};

/// The Graph API version the request names.
pub const GRAPH_VERSION: &str = "v23.0";
const DAY_MS: i64 = 86_400_000;
/// Days read at each pass, today included: figures of recent days are revised.
pub const DAYS: i64 = 3;

/// Cost per (UTC day start in ms, category label), summed over countries and numbers.
pub type DayCosts = BTreeMap<(i64, String), f64>;

/// Reads the last [`DAYS`] UTC days up to `now_ms`, daily, cost by pricing category.
pub async fn daily_costs(
    client: &reqwest::Client,
    api: &MetaApi,
    now_ms: i64,
) -> Result<DayCosts, CallError> {
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
    let (start, end) = (
        (today - (DAYS - 1) * DAY_MS) / 1000,
        (today + DAY_MS) / 1000,
    );
    let fields = format!(
        "pricing_analytics.start({start}).end({end}).granularity(DAILY)\
         .metric_types([\"COST\"]).dimensions([\"PRICING_CATEGORY\"])"
    );
    let url = format!("{}/{GRAPH_VERSION}/{}", api.base_url, api.waba_id);
    let req = client
        .get(url)
        .query(&[("fields", fields)])
        .bearer_auth(api.access_token.expose_secret());
    parse(&get_json(req).await?)
}

/// Sums the data points by day and category. Categories are lower-cased to the label's
/// form (`MARKETING` → `marketing`); points without a cost (free, or a credit line
/// without COST) add nothing.
pub fn parse(body: &serde_json::Value) -> Result<DayCosts, CallError> {
    let data = body["pricing_analytics"]["data"]
        .as_array()
        .ok_or_else(|| CallError::Failed("no pricing_analytics.data in the reply".into()))?;
    let mut out = DayCosts::new();
    for point in data
        .iter()
        .flat_map(|d| d["data_points"].as_array().into_iter().flatten())
    {
        let (Some(start), Some(cost)) = (point["start"].as_i64(), point["cost"].as_f64()) else {
            continue;
        };
        if !cost.is_finite() || cost <= 0.0 {
            continue;
        }
        let category = point["pricing_category"]
            .as_str()
            .map_or("none".to_owned(), |c| {
                c.to_ascii_lowercase().replace('-', "_")
            });
        let day = (start * 1000).div_euclid(DAY_MS) * DAY_MS;
        *out.entry((day, category)).or_default() += cost;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_summed_by_day_and_category_over_countries() {
        let path = format!(
            "{}/../shared/fixtures/billing/meta_pricing_analytics_daily.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let costs = parse(&body).unwrap();
        let day = |s: i64, c: &str| costs[&(s * 1000, c.to_owned())];
        assert!((day(1_758_672_000, "marketing") - (1029.3952 + 201.02)).abs() < 1e-9);
        assert!((day(1_758_585_600, "utility") - (357.075 + 74.8144)).abs() < 1e-9);
        assert_eq!(costs.len(), 4);
    }
}
