//! Realistic traffic through the exporter's own endpoints: the bot's send hooks and AI
//! reports, Meta and Twilio webhooks (statuses with pricing, failures with error codes,
//! inbound messages, a duplicate, an ignored and rejected requests).
//!
//! The exporter runs with `--max-label-values 3`: the first three templates, error codes,
//! models, operations and intents keep their names, later ones become `other` and count
//! in `messaging_label_overflow_total`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::billing_api;
use super::support::now_secs;

/// The templates that keep their names, then two that overflow into `other`.
pub const TEMPLATES: [(&str, &str); 3] = [
    ("spring_sale", "marketing"),
    ("order_update", "utility"),
    ("login_otp", "authentication"),
];
const OVERFLOW_TEMPLATES: [&str; 2] = ["promo_flash", "promo_weekend"];

pub struct Traffic {
    base: String,
    http: reqwest::Client,
    run: String,
    next_id: u64,
    next_phone: u64,
    /// Every phone number used, for checking that no panel shows one in full.
    pub phones: Vec<String>,
    /// Whether POST /v1/check-send exists in this build (it is being built in parallel).
    pub presend_available: Option<bool>,
}

impl Traffic {
    pub fn new(base: String, run: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
            run,
            next_id: 0,
            next_phone: 0,
            phones: Vec::new(),
            presend_available: None,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}-{:06}", self.run, self.next_id)
    }

    /// A Twilio-shaped SID: SM + 32 hex digits.
    fn sid(&mut self) -> String {
        self.next_id += 1;
        let run = u64::from_str_radix(&self.run, 16).unwrap_or(0);
        format!("SM{run:016x}{:016x}", self.next_id)
    }

    fn phone(&mut self) -> String {
        self.next_phone += 1;
        let run = u64::from_str_radix(&self.run, 16).unwrap_or(0) % 1000;
        let p = format!("91987{run:03}{:04}", self.next_phone);
        self.phones.push(p.clone());
        p
    }

    async fn post_json(&self, path: &str, body: &Value, want: StatusCode) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(
            status, want,
            "POST {path} answered {status}: {text}\nbody: {body}"
        );
    }

    /// A Twilio webhook, signed as Twilio signs it for the exporter's PUBLIC_URL.
    async fn post_form(&self, path: &str, params: &[(&str, &str)]) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let signature = messaging_exporter::providers::twilio::sign(
            billing_api::AUTH_TOKEN.as_bytes(),
            &format!("{}{path}", billing_api::PUBLIC_URL),
            &owned,
        );
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-twilio-signature", signature)
            .form(params)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "POST {path} answered {status}: {params:?}"
        );
    }

    async fn hooks(&self, items: Vec<Value>) {
        if !items.is_empty() {
            self.post_json(
                "/v1/events/sent",
                &Value::Array(items),
                StatusCode::ACCEPTED,
            )
            .await;
        }
    }

    async fn meta(&self, value: Value) {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "104455667788990", "changes": [{"field": "messages", "value": value}]}]
        });
        self.post_json("/webhooks/meta", &body, StatusCode::OK)
            .await;
    }

    async fn meta_statuses(&self, statuses: Vec<Value>) {
        if !statuses.is_empty() {
            self.meta(json!({"messaging_product": "whatsapp", "metadata": meta_number(), "statuses": statuses}))
                .await;
        }
    }

    /// One round of a day's traffic in miniature; `scale` multiplies the volume.
    /// `burst` adds a run of failures on spring_sale, enough to fire the failure alerts.
    pub async fn round(&mut self, scale: usize, burst: usize) {
        let now = now_secs() as i64;
        let at = |offset: i64| (now + offset).to_string();
        let sent_at = |offset: i64| rfc3339(now + offset);

        // Users write first: their windows open and the bot's answers measure response
        // latency and keep messaging_sessions_active up.
        let mut inbound_phones = Vec::new();
        let mut messages = Vec::new();
        for (i, kind) in ["text", "interactive", "text"].into_iter().enumerate() {
            let phone = self.phone();
            let id = self.id("wamid.in-");
            let mut m =
                json!({"from": phone, "id": id, "timestamp": at(-60 + i as i64), "type": kind});
            if kind == "text" {
                m["text"] = json!({"body": "Where is my order?"});
            } else {
                m["interactive"] = json!({"type": "button_reply",
                    "button_reply": {"id": "track", "title": "Track order"}});
            }
            messages.push(m);
            inbound_phones.push(phone);
        }
        let contacts: Vec<Value> = inbound_phones
            .iter()
            .map(|p| json!({"profile": {"name": "Test User"}, "wa_id": p}))
            .collect();
        self.meta(
            json!({"messaging_product": "whatsapp", "metadata": meta_number(),
                         "contacts": contacts, "messages": messages}),
        )
        .await;

        let mut hooks = Vec::new();
        let mut statuses = Vec::new();

        // Templates: sent → delivered (priced by Meta) → read for most.
        let overflow: Vec<(&str, &str)> = OVERFLOW_TEMPLATES
            .iter()
            .map(|t| (*t, "marketing"))
            .collect();
        let plan: Vec<((&str, &str), usize)> = TEMPLATES
            .iter()
            .map(|t| (*t, 3 * scale))
            .chain(overflow.into_iter().map(|t| (t, scale)))
            .collect();
        for ((template, category), n) in plan {
            for k in 0..n {
                let id = self.id("wamid.out-");
                let phone = self.phone();
                // Deliveries take 2-40 s, reads follow within minutes.
                let delivered = -110 + (k as i64 * 7) % 40;
                hooks.push(
                    json!({"message_id": id, "phone": format!("+{phone}"), "provider": "meta",
                    "channel": "whatsapp", "is_template": true, "template_name": template,
                    "template_category": category, "sent_at": sent_at(-120)}),
                );
                statuses.push(json!({"id": id, "status": "sent", "timestamp": at(-119), "recipient_id": phone}));
                statuses.push(json!({"id": id, "status": "delivered", "timestamp": at(delivered),
                    "recipient_id": phone,
                    "pricing": {"billable": true, "pricing_model": "PMP", "type": "regular", "category": category}}));
                if k % 3 != 2 {
                    statuses.push(json!({"id": id, "status": "read", "timestamp": at(-20), "recipient_id": phone}));
                }
            }
        }

        // Free-form answers to the users who wrote: inside the window, so free.
        for phone in &inbound_phones {
            let id = self.id("wamid.reply-");
            hooks.push(
                json!({"message_id": id, "phone": format!("+{phone}"), "is_template": false,
                "sent_at": sent_at(-50)}),
            );
            statuses.push(json!({"id": id, "status": "delivered", "timestamp": at(-48), "recipient_id": phone}));
        }

        // Failures: at the provider after `sent` (two codes), and a send call that failed
        // outright (a third). A fourth code overflows into `other`.
        let codes = [
            (131026, "Message undeliverable"),
            (131049, "Meta chose not to deliver"),
        ];
        for k in 0..(scale + burst) {
            let id = self.id("wamid.fail-");
            let phone = self.phone();
            let (code, title) = codes[k % 2];
            hooks.push(json!({"message_id": id, "phone": format!("+{phone}"), "is_template": true,
                "template_name": "spring_sale", "template_category": "marketing", "sent_at": sent_at(-90)}));
            statuses.push(
                json!({"id": id, "status": "sent", "timestamp": at(-89), "recipient_id": phone}),
            );
            statuses.push(
                json!({"id": id, "status": "failed", "timestamp": at(-80), "recipient_id": phone,
                "errors": [{"code": code, "title": title, "message": title,
                            "error_data": {"details": "Test failure"}}]}),
            );
        }
        for code in [131047, 130472] {
            let id = self.id("wamid.hookfail-");
            let phone = self.phone();
            hooks.push(json!({"message_id": id, "phone": format!("+{phone}"), "is_template": false,
                "sent_at": sent_at(-70), "error": {"code": code, "title": "Re-engagement message"}}));
        }

        // Statuses whose send hook never comes: counted as template "unknown" after the
        // grace period.
        for _ in 0..scale {
            let id = self.id("wamid.orphan-");
            let phone = self.phone();
            statuses.push(
                json!({"id": id, "status": "sent", "timestamp": at(-40), "recipient_id": phone}),
            );
            statuses.push(json!({"id": id, "status": "delivered", "timestamp": at(-35), "recipient_id": phone}));
        }

        self.hooks(hooks).await;
        let redelivered = statuses[0].clone();
        self.meta_statuses(statuses).await;
        // Meta redelivers: counted once, as a duplicate webhook event.
        self.meta_statuses(vec![redelivered]).await;

        self.twilio(scale).await;
        self.ai(scale).await;
        self.noise().await;
        self.presend(&inbound_phones[0]).await;
    }

    /// SMS through Twilio: a user writes, the bot answers and sends a notice; one is
    /// undelivered (carrier filtering).
    async fn twilio(&mut self, scale: usize) {
        let user = self.phone();
        let inbound_sid = self.sid();
        self.post_form(
            "/webhooks/twilio/inbound",
            &[
                ("MessageSid", &inbound_sid),
                ("SmsSid", &inbound_sid),
                ("SmsStatus", "received"),
                ("From", &format!("+{user}")),
                ("To", "+15550100142"),
                ("Body", "Open tomorrow?"),
                ("NumMedia", "0"),
                ("AccountSid", "AC703f069b4f94388bc65eefc880b85f64"),
            ],
        )
        .await;
        let mut hooks = Vec::new();
        let mut callbacks = Vec::new();
        for k in 0..(2 * scale + 1) {
            let sid = self.sid();
            let phone = if k == 0 { user.clone() } else { self.phone() };
            hooks.push(
                json!({"message_id": sid, "phone": format!("+{phone}"), "provider": "twilio",
                "channel": "sms", "is_template": false}),
            );
            let last = if k == 2 * scale {
                "undelivered"
            } else {
                "delivered"
            };
            callbacks.push((sid, phone, last));
        }
        self.hooks(hooks).await;
        for (sid, phone, last) in callbacks {
            for status in ["sent", last] {
                let mut params = vec![
                    ("MessageSid", sid.as_str()),
                    ("SmsSid", sid.as_str()),
                    ("MessageStatus", status),
                    ("SmsStatus", status),
                    ("From", "+15550100142"),
                    ("AccountSid", "AC703f069b4f94388bc65eefc880b85f64"),
                ];
                let to = format!("+{phone}");
                params.push(("To", &to));
                if status == "undelivered" {
                    params.push(("ErrorCode", "30007"));
                }
                self.post_form("/webhooks/twilio/status", &params).await;
            }
        }
    }

    /// AI calls: classification (with intents, one of them overflowing), generation
    /// with slow calls and errors, and summarization.
    async fn ai(&self, scale: usize) {
        let intents = [
            "book_appointment",
            "order_status",
            "greeting",
            "cancel_order",
        ];
        let mut reports = Vec::new();
        for k in 0..(4 * scale) {
            reports.push(
                json!({"operation": "classification", "model": "gpt-4o-mini",
                "latency_ms": 300.0 + 150.0 * k as f64, "outcome": "ok", "intent": intents[k % 4],
                "confidence": 0.9, "input_tokens": 120, "output_tokens": 8, "cost": 0.0002,
                "currency": "USD"}),
            );
        }
        for k in 0..(2 * scale) {
            reports.push(json!({"operation": "generation", "model": "gpt-4o",
                "latency_ms": 2500.0 + 4000.0 * k as f64, "outcome": "ok", "input_tokens": 900,
                "output_tokens": 250, "cost": 0.0071, "currency": "USD"}));
        }
        for _ in 0..scale {
            reports.push(
                json!({"operation": "generation", "model": "gpt-4o", "latency_ms": 12000.0,
                "outcome": "error", "error_type": "timeout"}),
            );
        }
        reports.push(json!({"operation": "summarization", "model": "gpt-4o-mini", "latency_ms": 950.0,
            "outcome": "ok", "input_tokens": 2000, "output_tokens": 150, "cost": 0.0004, "currency": "USD"}));
        self.post_json(
            "/v1/events/ai",
            &Value::Array(reports),
            StatusCode::ACCEPTED,
        )
        .await;
    }

    /// What else reaches a public webhook URL: a field the exporter ignores, and requests
    /// it must reject.
    async fn noise(&self) {
        let ignored = json!({"object": "whatsapp_business_account", "entry": [{"id": "104455667788990",
            "time": 1_758_621_600, "changes": [{"field": "message_template_status_update",
            "value": {"event": "APPROVED", "message_template_id": 1, "message_template_name": "spring_sale"}}]}]});
        self.post_json("/webhooks/meta", &ignored, StatusCode::OK)
            .await;
        for (path, content_type) in [
            ("/webhooks/meta", "text/plain"),
            ("/webhooks/twilio", "application/json"),
        ] {
            let resp = self
                .http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body("not a webhook")
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            assert!(
                resp.status().is_client_error(),
                "{path} accepted a malformed request: {}",
                resp.status()
            );
        }
    }

    /// The pre-send API, if this build has it.
    async fn presend(&mut self, phone: &str) {
        if self.presend_available == Some(false) {
            return;
        }
        let resp = self
            .http
            .post(format!("{}/v1/check-send", self.base))
            .json(
                &json!({"phone": phone, "is_template": true, "template_name": "spring_sale",
                          "template_category": "marketing"}),
            )
            .send()
            .await
            .expect("POST /v1/check-send");
        let status = resp.status();
        match status {
            StatusCode::NOT_FOUND => self.presend_available = Some(false),
            s if s.is_success() => self.presend_available = Some(true),
            s => panic!(
                "POST /v1/check-send answered {s}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
}

fn meta_number() -> Value {
    json!({"display_phone_number": "15550100123", "phone_number_id": "110200340050060"})
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a valid timestamp")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
