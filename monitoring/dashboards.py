"""The four provisioned dashboards, built for monitoring/generate.py.

Generated so that every panel gets the same datasource references, units, descriptions and
grid layout, and every query the same selectors. Datasources are dashboard variables
(`$datasource`, `$pg_datasource`), never fixed uids, so the boards work in any Grafana;
every board selects the exporter's group labels (`$job` by default) and `$instance`.
"""

PROM = {"type": "prometheus", "uid": "${datasource}"}
PG = {"type": "grafana-postgresql-datasource", "uid": "${pg_datasource}"}

# The delivery-success SLO's error budget (99% delivered), as in the SLO alert rules.
SLO_BUDGET = 0.01

# Money is shown per currency, never added across currencies: each money series' legend
# ends with its currency code, and takes that currency's unit where Grafana has one.
MONEY = "none"
GRAFANA_CURRENCIES = ("INR", "USD", "EUR", "GBP", "BRL", "IDR", "ZAR", "JPY", "CHF", "SEK",
                      "NOK", "DKK", "PLN", "CZK", "KRW", "PHP")


class Selectors:
    """The label matchers of every query, from monitoring/config.json.

    Raw exporter series are matched by the configured selector, the chosen group labels
    and instances; recorded series (named level:metric:operations) keep the group labels
    but not the instance, so they are matched by the group labels alone.
    """

    def __init__(self, config):
        self.group_labels = config.group_labels
        self.selector = config.exporter.selector
        self.group = ", ".join(f'{g}=~"${g}"' for g in config.group_labels)
        self.raw = f'{self.selector}, {self.group}, instance=~"$instance"'
        pc = 'provider=~"$provider", channel=~"$channel"'
        outbound = f'{pc}, template=~"$template"'
        ai = 'operation=~"$operation", model=~"$model"'
        self.pc, self.pc_rec = f"{self.raw}, {pc}", f"{self.group}, {pc}"
        self.outbound, self.outbound_rec = f"{self.raw}, {outbound}", f"{self.group}, {outbound}"
        self.cost = f'{self.outbound}, currency=~"$currency"'
        self.ai, self.ai_rec = f"{self.raw}, {ai}", f"{self.group}, {ai}"
        self.firing_alerts = (f'ALERTS{{alertstate="firing", service="{config.service}", '
                              f'severity!="{config.severity["none"]}", {self.group}}}')

    def variables(self, pg=False):
        """Datasources, then each group label (one value: one environment at a time),
        then instances."""
        out = [datasource_variable("datasource", "Prometheus", PROM["type"])]
        if pg:
            out.append(datasource_variable("pg_datasource", "PostgreSQL", PG["type"]))
        chosen = [self.selector]
        for g in self.group_labels:
            out.append(variable(g, g.capitalize(), f"label_values(up{{{', '.join(chosen)}}}, {g})", multi=False))
            chosen.append(f'{g}=~"${g}"')
        out.append(variable("instance", "Instance",
                            f"label_values(up{{{', '.join(chosen)}}}, instance)"))
        return out

    def label_values(self, metric, label, extra=""):
        sel = f"{self.selector}, {self.group}" + (f", {extra}" if extra else "")
        return f"label_values({metric}{{{sel}}}, {label})"


# Never show a whole phone number: everything but the last 4 digits becomes '*'.
MASKED_PHONE = "repeat('*', GREATEST(length(phone) - 4, 0)) || right(phone, 4)"


# ---------------------------------------------------------------- building blocks


def steps(*pairs):
    """Threshold steps: base colour first, then (value, colour) pairs."""
    base, *rest = pairs
    out = [{"color": base, "value": None}]
    out += [{"color": c, "value": v} for v, c in rest]
    return {"mode": "absolute", "steps": out}


GOOD_LOW = steps("green", (0.05, "orange"), (0.10, "red"))  # failure/error ratios
GOOD_HIGH = steps("red", (0.90, "orange"), (0.97, "green"))  # delivery ratios
NEUTRAL = steps("green")

# Keyword arguments of panel() that belong in fieldConfig.defaults; the rest go on the panel.
FIELD_KEYS = {"decimals", "min", "max", "mappings"}


def prom(expr, legend="", instant=False, fmt=None):
    t = {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False)
    else:
        t.update(range=True)
    if fmt:
        t["format"] = fmt
    return t


def sql(query):
    return {
        "datasource": PG,
        "editorMode": "code",
        "format": "table",
        "rawQuery": True,
        "rawSql": query.strip(),
    }


def panel(kind, title, description, targets, unit, w, h, thresholds=NEUTRAL, **extra):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": thresholds},
            "overrides": [],
        },
        "_size": (w, h),
    }
    for key in sorted(FIELD_KEYS & extra.keys()):
        p["fieldConfig"]["defaults"][key] = extra.pop(key)
    p.update(extra)
    return p


def timeseries(title, description, targets, unit, w=12, h=8, thresholds=NEUTRAL,
               threshold_line=False, bars=False, **extra):
    p = panel("timeseries", title, description, targets, unit, w, h, thresholds, **extra)
    custom = {"drawStyle": "bars" if bars else "line", "fillOpacity": 10,
              "lineWidth": 1, "showPoints": "never", "spanNulls": True}
    if threshold_line:
        custom["thresholdsStyle"] = {"mode": "line+area"}
    p["fieldConfig"]["defaults"]["custom"] = custom
    p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}}
    return p


def stat(title, description, target, unit, w=4, h=4, thresholds=NEUTRAL, **extra):
    p = panel("stat", title, description, [target], unit, w, h, thresholds, **extra)
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "none", "textMode": "auto",
                    "justifyMode": "auto", "orientation": "auto"}
    return p


def bargauge(title, description, targets, unit, w=12, h=8, thresholds=NEUTRAL):
    p = panel("bargauge", title, description, targets, unit, w, h, thresholds)
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "displayMode": "gradient", "orientation": "horizontal",
                    "showUnfilled": True}
    return p


def heatmap(title, description, target, unit, w=12, h=8):
    target["format"] = "heatmap"
    p = panel("heatmap", title, description, [target], unit, w, h)
    p["options"] = {"calculate": False, "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64},
                    "yAxis": {"unit": unit, "axisPlacement": "left"},
                    "rowsFrame": {"layout": "auto"},
                    "tooltip": {"show": True, "yHistogram": True},
                    "legend": {"show": True}}
    return p


def table(title, description, target, unit="none", w=24, h=9, overrides=()):
    p = panel("table", title, description, [target], unit, w, h)
    p["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "unit", "value": u}]}
        for name, u in overrides
    ]
    p["options"] = {"showHeader": True, "cellHeight": "sm"}
    return p


def money_panel(p):
    """Gives each series whose name ends with a known currency code that currency's unit."""
    p["fieldConfig"]["overrides"] += [
        {"matcher": {"id": "byRegexp", "options": f"^(.* )?{c}$"},
         "properties": [{"id": "unit", "value": f"currency{c}"}]}
        for c in GRAFANA_CURRENCIES
    ]
    return p


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def datasource_variable(name, label, plugin):
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": plugin,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
        "current": {},
        "options": [],
        "hide": 0,
    }


def variable(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "sort": 1,
        "current": {},
        "options": [],
        "hide": 0,
    }


def layout(items):
    """Flows panels left to right in rows of 24 columns; ids in reading order."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(items, start=1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        out.append(p)
        x += w
        row_h = max(row_h, h)
    return out


def firing_alerts(s):
    """This project's firing alerts of the chosen job, as annotations on every graph."""
    return {
        "name": "Firing alerts",
        "datasource": PROM,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "expr": s.firing_alerts,
        "step": "1m",
        "titleFormat": "{{alertname}}",
        "textFormat": "{{severity}} {{provider}} {{channel}} {{instance}}",
        "tagKeys": "severity",
        "useValueForTime": False,
    }


def dashboard(uid, title, description, tags, variables, items, s, time_from="now-6h"):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["messaging"] + tags,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timezone": "",
        "templating": {"list": variables},
        "annotations": {"list": [firing_alerts(s)]},
        "links": [{"type": "dashboards", "tags": ["messaging"], "asDropdown": True,
                   "title": "Messaging dashboards", "includeVars": True,
                   "keepTime": True}],
        "panels": layout(items),
    }


def outbound_vars(s):
    m = "messaging_outbound_messages_total"
    return [
        variable("provider", "Provider", s.label_values(m, "provider")),
        variable("channel", "Channel", s.label_values(m, "channel", 'provider=~"$provider"')),
        variable("template", "Template",
                 s.label_values(m, "template", 'provider=~"$provider", channel=~"$channel"')),
    ]


# ---------------------------------------------------------------- 1. delivery health


def delivery(s):
    def inc(status):
        return f'sum(increase(messaging_outbound_messages_total{{status="{status}", {s.outbound}}}[$__range]))'

    items = slo_row(s) + [
        row("Funnel over the selected range"),
        stat("Sent", "Messages the provider reported sent (or that a later status implied).",
             prom(inc("sent"), instant=True), "short"),
        stat("Delivered", "Messages delivered to the handset.", prom(inc("delivered"), instant=True), "short"),
        stat("Read", "Messages the user opened (only where read receipts are on).",
             prom(inc("read"), instant=True), "short"),
        stat("Failed", "Messages that failed at the provider, or whose send call failed.",
             prom(inc("failed"), instant=True), "short",
             thresholds=steps("green", (1, "orange"))),
        stat("Delivery ratio", "Delivered / sent over the range. Below 97% is worth a look.",
             prom(f"{inc('delivered')} / {inc('sent')}", instant=True), "percentunit",
             thresholds=GOOD_HIGH, decimals=1),
        stat("Failure ratio", "Failed / (delivered + failed) over the range: the share of "
             "messages that reached an outcome and failed. The failure-ratio ticket fires above 5%.",
             prom(f'{inc("failed")} / sum(increase(messaging_outbound_messages_total{{status=~"delivered|failed", {s.outbound}}}[$__range]))',
                  instant=True), "percentunit", thresholds=GOOD_LOW, decimals=1),
        bargauge("Funnel: sent → delivered → read",
                 "How many messages made it through each step of the funnel in the range.",
                 [prom(inc("sent"), "sent", instant=True),
                  prom(inc("delivered"), "delivered", instant=True),
                  prom(inc("read"), "read", instant=True)], "short", w=12, h=7),
        timeseries("Messages by status",
                   "Outbound messages per second by status (accepted = the bot's send hook).",
                   [prom(f"sum by (status) (provider_channel_template_status:messaging_outbound_messages:rate5m{{{s.outbound_rec}}})",
                         "{{status}}")], "cps", w=12, h=7),
        row("By template"),
        timeseries("Delivery ratio by template", "Delivered / sent per template, 5-minute rate.",
                   [prom(f"provider_channel_template:messaging_outbound_delivery:ratio_rate5m{{{s.outbound_rec}}}",
                         "{{template}} ({{provider}}/{{channel}})")],
                   "percentunit", w=8, thresholds=GOOD_HIGH, max=1, min=0),
        timeseries("Read ratio by template", "Read / delivered per template, 5-minute rate.",
                   [prom(f"provider_channel_template:messaging_outbound_read:ratio_rate5m{{{s.outbound_rec}}}",
                         "{{template}} ({{provider}}/{{channel}})")],
                   "percentunit", w=8, max=1, min=0),
        timeseries("Failure ratio by template",
                   "Failed / (delivered + failed) per template, 5-minute rate. The ticket alert "
                   "fires when a template stays above 10% over 30 minutes.",
                   [prom(f"provider_channel_template:messaging_outbound_failure:ratio_rate5m{{{s.outbound_rec}}}",
                         "{{template}} ({{provider}}/{{channel}})")],
                   "percentunit", w=8, thresholds=GOOD_LOW, threshold_line=True, min=0),
    ] + category_row(s) + [
        row("Failures"),
        timeseries("Failures by error code",
                   "Provider error codes per second (Meta 131xxx, Twilio 3xxxx). docs/operations.md "
                   "lists the common ones.",
                   [prom(f"sum by (provider, code) (rate(messaging_message_errors_total{{{s.pc}}}[$__rate_interval]))",
                         "{{provider}} {{code}}")], "cps", w=16),
        bargauge("Top error codes", "The ten most frequent error codes over the range.",
                 [prom(f"topk(10, sum by (provider, code) (increase(messaging_message_errors_total{{{s.pc}}}[$__range])))",
                       "{{provider}} {{code}}", instant=True)], "short", w=8,
                 thresholds=steps("orange")),
    ] + presend_row(s) + [
        row("Latency"),
        timeseries("Delivery latency percentiles",
                   "Send to delivered, p50/p95/p99 over 5 minutes. The ticket alert fires when p95 "
                   "stays above 60 s for 15 minutes.",
                   [prom(f"provider_channel:messaging_delivery_latency_seconds:p{q}_rate5m{{{s.pc_rec}}}",
                         f"p{q} {{{{provider}}}}/{{{{channel}}}}") for q in ("50", "95", "99")],
                   "s", thresholds=steps("green", (60, "red")), threshold_line=True),
        heatmap("Delivery latency distribution", "Send to delivered, per histogram bucket.",
                prom(f"sum by (le) (increase(messaging_delivery_latency_seconds_bucket{{{s.pc}}}[$__rate_interval]))",
                     "{{le}}"), "s"),
        timeseries("Read latency percentiles", "Delivered to read, p50/p95/p99 over 5 minutes.",
                   [prom(f"provider_channel:messaging_read_latency_seconds:p{q}_rate5m{{{s.pc_rec}}}",
                         f"p{q} {{{{provider}}}}/{{{{channel}}}}") for q in ("50", "95", "99")], "s"),
        heatmap("Read latency distribution", "Delivered to read, per histogram bucket.",
                prom(f"sum by (le) (increase(messaging_read_latency_seconds_bucket{{{s.pc}}}[$__rate_interval]))",
                     "{{le}}"), "s"),
        timeseries("Response latency",
                   "From a user's message to the next outbound message to that phone: how long "
                   "users wait for an answer.",
                   [prom(f"histogram_quantile({q}, sum by (le) (rate(messaging_response_latency_seconds_bucket{{{s.pc}}}[$__rate_interval])))",
                         f"p{int(float(q) * 100)}") for q in ("0.5", "0.95")], "s", w=24),
        row("Inbound and sessions"),
        timeseries("Inbound messages by type", "User messages per second by type.",
                   [prom(f"sum by (type) (rate(messaging_inbound_messages_total{{{s.pc}}}[$__rate_interval]))",
                         "{{type}}")], "cps", w=10),
        timeseries("Sessions over time",
                   "Phones with an open 24-hour customer-service window. Every replica reports "
                   "the same database count, hence max.",
                   [prom(f"max(messaging_sessions_active{{{s.raw}}})", "open windows")],
                   "short", w=10),
        stat("Active sessions",
             "Phones with an open 24-hour customer-service window (free-form messages allowed) "
             "now.",
             prom(f"max(messaging_sessions_active{{{s.raw}}})", instant=True), "short", w=4, h=8),
    ]
    return dashboard("messaging-delivery", "Messaging / Delivery health",
                     "Are messages getting through? The delivery SLO, the funnel, ratios by "
                     "category and template, pre-send checks, failures, latency, sessions.",
                     ["delivery"], s.variables() + outbound_vars(s), items, s)


def slo_row(s):
    """Burn rates of the delivery-success SLO's windows and the 30-day budget left."""
    rec = f"{{{s.pc_rec}}}"

    def burn(windows):
        return [prom(f"provider_channel:messaging_outbound_failure:ratio_rate{w}{rec} / {SLO_BUDGET}",
                     f"{{{{provider}}}}/{{{{channel}}}} {w}") for w in windows]

    failed = f"sum_over_time(provider_channel:messaging_outbound_failed:rate5m{rec}[30d])"
    outcomes = f"sum_over_time(provider_channel:messaging_outbound_outcomes:rate5m{rec}[30d])"
    return [
        row("Delivery SLO: 99% of outcomes delivered over 30 days"),
        stat("Error budget left, 30 days",
             "1 - (failed / outcomes over the last 30 days) / 1%: the share of the month's "
             "error budget not yet spent (below zero: overspent). Counted from the recorded "
             "5-minute rates, so it covers at most what Prometheus retains.",
             prom(f"1 - ({failed} / {outcomes}) / {SLO_BUDGET}", "{{provider}}/{{channel}}",
                  instant=True),
             "percentunit", w=6, h=8, thresholds=steps("red", (0, "orange"), (0.25, "green")),
             decimals=1),
        timeseries("Burn rate, fast-burn windows",
                   "Failure ratio / 1% budget over 5m, 30m, 1h and 6h. MessagingDeliverySloFastBurn "
                   "pages when 1h and 5m both exceed 14.4, or 6h and 30m both exceed 6.",
                   burn(("5m", "30m", "1h", "6h")), "none", w=9,
                   thresholds=steps("green", (6, "orange"), (14.4, "red")), threshold_line=True,
                   min=0),
        timeseries("Burn rate, slow-burn windows",
                   "Failure ratio / 1% budget over 2h, 6h, 1d and 3d. MessagingDeliverySloSlowBurn "
                   "files a ticket when 1d and 2h both exceed 3, or 3d and 6h both exceed 1.",
                   burn(("2h", "6h", "1d", "3d")), "none", w=9,
                   thresholds=steps("green", (1, "orange"), (3, "red")), threshold_line=True,
                   min=0),
    ]


def category_row(s):
    """Delivery per Meta pricing category: authentication OTPs expire within minutes."""
    def rate(status):
        return (f'sum by (category) (rate(messaging_outbound_messages_total{{status="{status}", '
                f'{s.outbound}}}[$__rate_interval]))')

    return [
        row("By category"),
        timeseries("Delivery ratio by category", "Delivered / sent per pricing category.",
                   [prom(f"{rate('delivered')} / {rate('sent')}", "{{category}}")],
                   "percentunit", thresholds=GOOD_HIGH, max=1, min=0),
        timeseries("Delivery latency p95 by category",
                   "Send to delivered, 95th percentile per pricing category. Authentication "
                   "codes that arrive late are useless.",
                   [prom(f"histogram_quantile(0.95, sum by (category, le) (rate(messaging_delivery_latency_seconds_bucket{{{s.pc}}}[$__rate_interval])))",
                         "{{category}}")], "s", thresholds=steps("green", (60, "red")),
                   threshold_line=True),
    ]


def presend_row(s):
    """POST /v1/check-send: what it blocks, and how fast and reliably it answers."""
    checks = f"messaging_presend_checks_total{{{s.raw}}}"
    check_send = f'{s.raw}, route="/v1/check-send"'
    return [
        row("Pre-send checks (POST /v1/check-send)"),
        timeseries("Share of checks blocked, by reason",
                   "Blocked checks / all checks, by the reason given to the bot (outside the "
                   "session window, rate limited).",
                   [prom(f'sum by (reason) (rate(messaging_presend_checks_total{{decision="blocked", {s.raw}}}[$__rate_interval])) '
                         f"/ ignoring (reason) group_left sum(rate({checks}[$__rate_interval]))",
                         "{{reason}}")], "percentunit", w=6, min=0),
        timeseries("Pre-send decisions by reason",
                   "Check-send answers per second, by decision and reason.",
                   [prom(f"sum by (decision, reason) (rate({checks}[$__rate_interval]))",
                         "{{decision}} {{reason}}")], "cps", w=6),
        timeseries("Check-send p95 latency",
                   "95th percentile of POST /v1/check-send latency: every send of the bot waits "
                   "for it. MessagingCheckSendLatencyHigh files a ticket above 500 ms.",
                   [prom(f"histogram_quantile(0.95, sum by (le) (rate(messaging_exporter_http_request_duration_seconds_bucket{{{check_send}}}[$__rate_interval])))",
                         "p95")], "s", w=6, thresholds=steps("green", (0.5, "red")),
                   threshold_line=True),
        timeseries("Check-send answers by status",
                   "POST /v1/check-send answers per second by HTTP status. MessagingCheckSendErrors "
                   "pages when over 5% are 5xx.",
                   [prom(f"sum by (status) (rate(messaging_exporter_http_request_duration_seconds_count{{{check_send}}}[$__rate_interval]))",
                         "{{status}}")], "reqps", w=6),
    ]


# ---------------------------------------------------------------- 2. cost


def cost(s):
    spend = f"messaging_cost_total{{{s.cost}}}"
    # The bill has no template: it is per message (Twilio) or per day (Meta).
    billed = f'messaging_billed_cost_total{{{s.pc}, currency=~"$currency"}}'
    delivered = f'messaging_outbound_messages_total{{status="delivered", {s.outbound}}}'
    money = steps("green", (500, "red"))

    def per(by, window):
        return f"sum by ({by}) (increase({spend}[{window}]))"

    items = [
        row("Spend (one figure per currency, never added up)"),
        money_panel(stat("Spend, last hour",
                         "Message spend in the last hour, per currency. Red from 500, the "
                         "default hourly budget of MessagingSpendOverBudget (in INR).",
                         prom(per("currency", "1h"), "{{currency}}", instant=True), MONEY, w=5,
                         thresholds=money, decimals=2)),
        money_panel(stat("Spend, last 24 hours", "Message spend in the last 24 hours, per currency.",
                         prom(per("currency", "1d"), "{{currency}}", instant=True), MONEY, w=5,
                         decimals=2)),
        money_panel(stat("Month to date (estimate)",
                         "Spend since the first of the month as Prometheus saw it, per currency "
                         "(needs Prometheus retention of a month; the ledger table below is exact).",
                         prom(per("currency", "$__range"), "{{currency}}", instant=True), MONEY,
                         w=5, decimals=2, timeFrom="now/M", hideTimeOverride=False)),
        money_panel(stat("30 days at today's rate",
                         "The last 24 hours' spend times 30, per currency: where the month is heading.",
                         prom(f"{per('currency', '1d')} * 30", "{{currency}}", instant=True), MONEY,
                         w=5, decimals=2)),
        money_panel(stat("Cost per delivered message",
                         "Spend / delivered messages over the range, per currency.",
                         prom(f"{per('currency', '$__range')} / on () group_left "
                              f"sum(increase({delivered}[$__range]))", "{{currency}}", instant=True),
                         MONEY, w=4, decimals=3)),
        money_panel(timeseries("Spend per hour by category",
                               "Spend in the trailing hour, by Meta pricing category and currency.",
                               [prom(per("category, currency", "1h"), "{{category}} {{currency}}")],
                               MONEY)),
        money_panel(timeseries("Spend per hour by template",
                               "Spend in the trailing hour, by template and currency.",
                               [prom(per("template, currency", "1h"), "{{template}} {{currency}}")],
                               MONEY)),
        money_panel(timeseries("Spend per day by category",
                               "Spend per calendar day, by category and currency.",
                               [prom(per("category, currency", "1d"), "{{category}} {{currency}}")],
                               MONEY, bars=True, interval="1d")),
        money_panel(timeseries("Spend per day by template",
                               "Spend per calendar day, by template and currency.",
                               [prom(per("template, currency", "1d"), "{{template}} {{currency}}")],
                               MONEY, bars=True, interval="1d")),
        money_panel(timeseries(
            "Hourly spend against budget",
            "All providers and templates: the recorded hourly spend per currency against "
            "the budget the alerts use (currency:messaging_cost_budget:hourly).",
            [prom(f'currency:messaging_cost:increase1h{{{s.group}, currency=~"$currency"}}',
                  "spend {{currency}}"),
             prom('currency:messaging_cost_budget:hourly{currency=~"$currency"}',
                  "budget {{currency}}")], MONEY)),
        money_panel(timeseries(
            "Cost per delivered message by category",
            "Spend / delivered messages over the trailing hour, by category and currency.",
            [prom(f"{per('category, currency', '1h')} / on (category) group_left "
                  f"sum by (category) (increase({delivered}[1h]))", "{{category}} {{currency}}")],
            MONEY, decimals=3)),
        row("Estimate against the bill (one figure per provider and currency)"),
        money_panel(timeseries(
            "Estimate and bill per day by provider",
            "Trailing 24 hours: what the exporter estimated from the rate card "
            "(messaging_cost_total) beside what the provider billed "
            "(messaging_billed_cost_total: Twilio's price of each message, Meta's "
            "pricing_analytics). The bill lags the estimate by minutes (Twilio) to hours "
            "(Meta). Empty for a provider whose API credentials are not set.",
            [prom(f"sum by (provider, currency) (increase({spend}[1d]))",
                  "estimate {{provider}} {{currency}}"),
             prom(f"sum by (provider, currency) (increase({billed}[1d]))",
                  "billed {{provider}} {{currency}}")], MONEY)),
        timeseries(
            "Estimate / bill over a day",
            "provider_currency:messaging_cost_billed:ratio_1d: 100% when the estimate "
            "matches the bill; MessagingCostEstimateDrift opens a ticket outside 95–105% "
            "for 6 hours.",
            [prom(f'provider_currency:messaging_cost_billed:ratio_1d{{{s.group}, '
                  f'provider=~"$provider", currency=~"$currency"}}', "{{provider}} {{currency}}")],
            "percentunit", thresholds=steps("red", (0.95, "green"), (1.05, "red")),
            threshold_line=True),
        row("From the ledger (PostgreSQL)"),
        table("Top phones by cost",
              "The 20 phones that cost most among messages first seen in the range, per "
              "currency. Numbers are masked to their last 4 digits.",
              sql(f"""
SELECT {MASKED_PHONE} AS "phone",
       count(*) AS "messages",
       sum(cost) AS "cost",
       currency AS "currency"
FROM outbound_messages
WHERE first_seen_ms BETWEEN $__unixEpochFrom()::bigint * 1000 AND $__unixEpochTo()::bigint * 1000
  AND provider IN ($provider) AND channel IN ($channel)
  AND phone <> ''
GROUP BY phone, currency
ORDER BY sum(cost) DESC, count(*) DESC
LIMIT 20
"""), w=12),
        table("Month to date by category",
              "Exact spend since the first of the month (UTC) from the message ledger, by the "
              "category each message was priced at.",
              sql("""
SELECT CASE WHEN cost_category = '' THEN 'none' ELSE cost_category END AS "category",
       currency AS "currency",
       count(*) AS "messages",
       sum(cost) AS "cost"
FROM outbound_messages
WHERE cost > 0
  AND first_seen_ms >= CAST(extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC')) * 1000 AS BIGINT)
GROUP BY 1, 2
ORDER BY sum(cost) DESC
"""), w=12),
        table("Recent failed messages",
              "The 50 latest failures in the range with the provider's error. Numbers are masked "
              "to their last 4 digits.",
              sql(f"""
SELECT to_timestamp(failed_ms / 1000.0) AS "failed at",
       provider AS "provider",
       channel AS "channel",
       {MASKED_PHONE} AS "phone",
       CASE WHEN label_template <> '' THEN label_template
            WHEN template_name <> '' THEN template_name ELSE 'none' END AS "template",
       error_code AS "code",
       error_title AS "title",
       error_details AS "details"
FROM outbound_messages
WHERE failed_ms BETWEEN $__unixEpochFrom()::bigint * 1000 AND $__unixEpochTo()::bigint * 1000
  AND provider IN ($provider) AND channel IN ($channel)
ORDER BY failed_ms DESC
LIMIT 50
""")),
    ]
    variables = s.variables(pg=True) + outbound_vars(s) + [
        variable("currency", "Currency", s.label_values("messaging_cost_total", "currency")),
    ]
    return dashboard("messaging-cost", "Messaging / Cost",
                     "What messages cost: per hour and day, by category and template, month to "
                     "date, the estimate against the providers' bill, and the costliest phones. "
                     "Amounts are never added across currencies.", ["cost"], variables, items, s, time_from="now-7d")


# ---------------------------------------------------------------- 3. AI


def ai(s):
    reqs = f"messaging_ai_requests_total{{{s.ai}}}"
    items = [
        row("Requests"),
        stat("Calls", "AI calls the bot reported over the range.",
             prom(f"sum(increase({reqs}[$__range]))", instant=True), "short"),
        stat("Error ratio", "Failed calls / all calls over the range.",
             prom(f'sum(increase(messaging_ai_requests_total{{outcome="error", {s.ai}}}[$__range])) / sum(increase({reqs}[$__range]))',
                  instant=True), "percentunit", thresholds=GOOD_LOW, decimals=1),
        stat("p95 latency", "95th percentile of call latency over the range.",
             prom(f"histogram_quantile(0.95, sum by (le) (increase(messaging_ai_latency_seconds_bucket{{{s.ai}}}[$__range])))",
                  instant=True), "s", thresholds=steps("green", (5, "orange"), (10, "red"))),
        money_panel(stat(
            "AI spend", "AI spend over the range as the bot reported it, per currency.",
            prom(f'sum by (currency) (increase(messaging_ai_cost_total{{{s.raw}, model=~"$model"}}[$__range]))',
                 "{{currency}}", instant=True), MONEY, decimals=2)),
        stat("Tokens", "Input plus output tokens over the range.",
             prom(f'sum(increase(messaging_ai_tokens_total{{{s.raw}, model=~"$model"}}[$__range]))', instant=True),
             "short"),
        stat("Intents classified", "Intents the AI returned over the range.",
             prom(f"sum(increase(messaging_ai_intents_total{{{s.raw}}}[$__range]))", instant=True), "short"),
        timeseries("Calls by operation and outcome", "AI calls per second.",
                   [prom(f"sum by (operation, outcome) (rate({reqs}[$__rate_interval]))",
                         "{{operation}} {{outcome}}")], "cps"),
        timeseries("Error ratio by operation and model",
                   "Failed / all calls over 5 minutes. The ticket alert fires above 10% for 15 minutes.",
                   [prom(f"operation_model:messaging_ai_errors:ratio_rate5m{{{s.ai_rec}}}",
                         "{{operation}} {{model}}")], "percentunit", thresholds=GOOD_LOW,
                   threshold_line=True, min=0),
        row("Latency"),
        timeseries("Latency percentiles by operation", "p50/p95/p99 of call latency by operation.",
                   [prom(f"histogram_quantile({q}, sum by (operation, le) (rate(messaging_ai_latency_seconds_bucket{{{s.ai}}}[$__rate_interval])))",
                         f"p{int(float(q) * 100)} {{{{operation}}}}") for q in ("0.5", "0.95", "0.99")],
                   "s"),
        timeseries("p95 latency by operation and model",
                   "The recorded p95 the ticket alert uses (above 10 s for 15 minutes).",
                   [prom(f"operation_model:messaging_ai_latency_seconds:p95_rate5m{{{s.ai_rec}}}",
                         "{{operation}} {{model}}")], "s",
                   thresholds=steps("green", (10, "red")), threshold_line=True),
        heatmap("Latency distribution", "AI call latency per histogram bucket.",
                prom(f"sum by (le) (increase(messaging_ai_latency_seconds_bucket{{{s.ai}}}[$__rate_interval]))",
                     "{{le}}"), "s", w=24),
        row("Tokens, cost and intents"),
        timeseries("Tokens by model", "Tokens per second by model and direction.",
                   [prom(f'sum by (model, direction) (rate(messaging_ai_tokens_total{{{s.raw}, model=~"$model"}}[$__rate_interval]))',
                         "{{model}} {{direction}}")], "cps", w=8),
        money_panel(timeseries(
            "AI spend per hour by model", "AI spend in the trailing hour by model and currency.",
            [prom(f'sum by (model, currency) (increase(messaging_ai_cost_total{{{s.raw}, model=~"$model"}}[1h]))',
                  "{{model}} {{currency}}")], MONEY, w=8)),
        bargauge("Top intents", "The ten intents the AI classified most over the range.",
                 [prom(f"topk(10, sum by (intent) (increase(messaging_ai_intents_total{{{s.raw}}}[$__range])))",
                       "{{intent}}", instant=True)], "short", w=8),
    ]
    variables = s.variables() + [
        variable("operation", "Operation", s.label_values("messaging_ai_requests_total", "operation")),
        variable("model", "Model",
                 s.label_values("messaging_ai_requests_total", "model", 'operation=~"$operation"')),
    ]
    return dashboard("messaging-ai", "Messaging / AI",
                     "The bot's AI calls: rate, errors, latency, tokens, cost and intents.",
                     ["ai"], variables, items, s)


# ---------------------------------------------------------------- 4. exporter internals


def exporter(s):
    ready_map = [{"type": "value", "options": {
        "0": {"text": "not ready", "color": "red"},
        "1": {"text": "ready", "color": "green"}}}]
    up_map = [{"type": "value", "options": {
        "0": {"text": "down", "color": "red"},
        "1": {"text": "up", "color": "green"}}}]
    red_zero = steps("red", (1, "green"))
    items = [
        row("Health"),
        stat("Scraped", "Whether every selected exporter answered Prometheus's last scrape.",
             prom(f"min(up{{{s.raw}}})", instant=True), "none", w=4, thresholds=red_zero,
             mappings=up_map),
        stat("Ready", "Whether every selected exporter reaches its database (/readyz).",
             prom(f"min(messaging_exporter_ready{{{s.raw}}})", instant=True), "none", w=4,
             thresholds=red_zero, mappings=ready_map),
        stat("Replicas", "Exporter targets Prometheus scrapes.",
             prom(f"count(up{{{s.raw}}})", instant=True), "short", w=4),
        stat("Scrape duration", "How long the last scrape of /metrics took (slowest replica).",
             prom(f"max(scrape_duration_seconds{{{s.raw}}})", instant=True), "s", w=4,
             thresholds=steps("green", (1, "orange"), (5, "red"))),
        table("Build info", "Version each replica runs.",
              prom(f"max by (instance, version) (messaging_exporter_build_info{{{s.raw}}})",
                   instant=True, fmt="table"), w=8, h=4),
        row("Webhooks"),
        timeseries("Webhook events by outcome",
                   "Provider webhook items per second: processed, duplicate (redelivery), ignored "
                   "(not for us), rejected (bad signature, type or body).",
                   [prom(f"sum by (provider, outcome) (rate(messaging_webhook_events_total{{{s.raw}}}[$__rate_interval]))",
                         "{{provider}} {{outcome}}")], "cps"),
        timeseries("Webhook rejections", "Rejected webhook requests in the trailing 15 minutes; "
                   "the ticket alert fires above 5.",
                   [prom(f'sum by (provider) (increase(messaging_webhook_events_total{{outcome="rejected", {s.raw}}}[15m]))',
                         "{{provider}}")], "short", thresholds=steps("green", (5, "red")),
                   threshold_line=True),
        row("HTTP"),
        timeseries("Request latency p95 by route", "95th percentile of request latency by route.",
                   [prom(f"histogram_quantile(0.95, sum by (route, le) (rate(messaging_exporter_http_request_duration_seconds_bucket{{{s.raw}}}[$__rate_interval])))",
                         "{{route}}")], "s"),
        timeseries("Requests by route and status", "Requests per second by route and HTTP status.",
                   [prom(f"sum by (route, status) (rate(messaging_exporter_http_request_duration_seconds_count{{{s.raw}}}[$__rate_interval]))",
                         "{{route}} {{status}}")], "reqps"),
        row("Database batches"),
        timeseries("Batches run again",
                   "Database batches run again per second, by reason: conflict (a row another "
                   "replica or the grace sweep wrote between the batch's read, or the kept copy "
                   "it took, and its write-back), presumed_new (a row the batch took for new "
                   "without reading it was stored) or deadlock. Nothing is counted twice. "
                   "Replicas that share messages show about one conflict per replica per minute.",
                   [prom(f"sum by (reason) (rate(messaging_exporter_db_retries_total{{{s.raw}}}[$__rate_interval]))",
                         "{{reason}}")], "cps"),
        timeseries("Batches skipping their read",
                   "Share of database batches that read nothing: kept (every row among those "
                   "their exporter committed lately, --kept-rows) and presumed_new (the rest "
                   "taken for new, while recent reads found such rows new). Low under a bot's "
                   "steady traffic: --kept-rows is small for its rate, or replicas share "
                   "messages.",
                   [prom(f'sum by (source) (rate(messaging_exporter_batch_reads_total{{source!="database", {s.raw}}}[$__rate_interval])) '
                         f"/ scalar(sum(rate(messaging_exporter_batch_reads_total{{{s.raw}}}[$__rate_interval])))",
                         "{{source}}")], "percentunit"),
        row("Saturation"),
        timeseries("Request places in use",
                   "Requests holding a place under --max-concurrent-requests (a request takes one "
                   "once its body has arrived), against the cap: at the cap, more get 503.",
                   [prom(f"max by (instance) (messaging_exporter_requests_in_flight{{{s.raw}}})",
                         "{{instance}} in flight"),
                    prom(f"max by (instance) (messaging_exporter_max_concurrent_requests{{{s.raw}}})",
                         "{{instance}} cap")], "short", w=6),
        timeseries("Database connections in use",
                   "Share of each pool's connections in use; near 1, requests wait for a "
                   "connection and get 503 past --db-timeout-ms.",
                   [prom(f'sum by (instance, pool) (messaging_exporter_db_connections{{state="in_use", {s.raw}}}) '
                         f"/ sum by (instance, pool) (messaging_exporter_db_max_connections{{{s.raw}}})",
                         "{{instance}} {{pool}}")], "percentunit", w=6),
        timeseries("Resident memory", "Resident memory of each exporter process.",
                   [prom(f"max by (instance) (process_resident_memory_bytes{{{s.raw}}})",
                         "{{instance}}")], "bytes", w=6),
        timeseries("CPU", "Cores used by each exporter process.",
                   [prom(f"sum by (instance) (rate(process_cpu_seconds_total{{{s.raw}}}[$__rate_interval]))",
                         "{{instance}}")], "short", w=3),
        timeseries("File descriptors", "Open file descriptors against the process's limit.",
                   [prom(f"max by (instance) (process_open_fds{{{s.raw}}}) / max by (instance) (process_max_fds{{{s.raw}}})",
                         "{{instance}}")], "percentunit", w=3),
        row("Relay to the bot"),
        timeseries("Oldest waiting webhook",
                   "Age of the oldest webhook waiting in the outbox to be relayed to the bot, by "
                   "target; MessagingRelayBacklog pages above 5 minutes. Zero without a relay URL.",
                   [prom(f"max by (target) (messaging_relay_oldest_seconds{{{s.raw}}})",
                         "{{target}}")], "s", w=6, thresholds=steps("green", (300, "red")),
                   threshold_line=True),
        timeseries("Backlog", "Webhooks waiting in the outbox, by target.",
                   [prom(f"sum by (target) (messaging_relay_backlog{{{s.raw}}})",
                         "{{target}}")], "short", w=6),
        timeseries("Relay deliveries by outcome",
                   "Delivery attempts per second: delivered (the bot answered 2xx), retried "
                   "(anything else or a timeout; backoff 1 s to 5 min), expired (dropped past "
                   "--relay-max-age-hours).",
                   [prom(f"sum by (target, outcome) (rate(messaging_relay_deliveries_total{{{s.raw}}}[$__rate_interval]))",
                         "{{target}} {{outcome}}")], "cps", w=6),
        timeseries("Relay lag p99", "Receipt to the bot's 2xx, 99th percentile, by target.",
                   [prom(f"histogram_quantile(0.99, sum by (target, le) (rate(messaging_relay_lag_seconds_bucket{{{s.raw}}}[$__rate_interval])))",
                         "{{target}}")], "s", w=6),
        row("Cardinality"),
        timeseries("Label overflow",
                   "Values per second reported as \"other\" because the label reached "
                   "--max-label-values (series: label combinations, because a family reached "
                   "--max-series). Anything above zero raises MessagingLabelOverflow.",
                   [prom(f"sum by (label) (rate(messaging_label_overflow_total{{{s.raw}}}[$__rate_interval]))",
                         "{{label}}")], "cps", w=24, thresholds=steps("green", (0.0001, "orange"))),
    ]
    variables = s.variables()
    return dashboard("messaging-exporter", "Messaging / Exporter internals",
                     "Is the exporter itself healthy? Scrapes, readiness, webhooks, HTTP, "
                     "database batches, label cardinality. Pre-send checks are on the Delivery "
                     "health board.", ["exporter"], variables, items, s, time_from="now-3h")


def build(config):
    """Every dashboard: file name → dashboard JSON object."""
    s = Selectors(config)
    return {
        "delivery.json": delivery(s),
        "cost.json": cost(s),
        "ai.json": ai(s),
        "exporter.json": exporter(s),
    }
