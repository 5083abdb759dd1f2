// CDS committee dashboard: GET /admin/report and /admin/safety with the admin token, shown as
// tiles, tables and charts (Chart.js, vendored under /static/vendor). Rules show by title (the id
// on hover), dates as ISO 8601 (YYYY-MM-DD). The token lives in sessionStorage only: it
// goes in the Authorization header, never in the URL. Data goes into the page with textContent.
"use strict";

(() => {
  const TOKEN_KEY = "spine-cds.admin-token";
  const TOP_RULES = 9; // weekly chart: the busiest rules by name, the rest as "Other rules"
  const TOP_REASONS = 10;
  const SAFETY_CASES = 100; // the most recently found possible misses listed
  // Distinct, print-safe colours; rules keep theirs across the charts.
  // (no pure green or red: those mean accepted and overridden)
  const PALETTE = [
    "#2680c2", "#f0b429", "#8719e0", "#0e7c86", "#e8590c", "#486581",
    "#d53f8c", "#7a8c00", "#62b0e8", "#a0522d", "#5a4fcf", "#9fb3c8",
  ];
  const OTHER_COLOUR = "#d9e2ec";
  const OUTCOME_COLOURS = {accepted: "#3f9142", overridden: "#cf1124", ignored: "#9fb3c8"};
  const INTEGER = new Intl.NumberFormat("en-GB");
  const DECIMAL = new Intl.NumberFormat("en-GB", {minimumFractionDigits: 1, maximumFractionDigits: 1});

  const $ = (id) => document.getElementById(id);
  const charts = new Map();
  let shownReport = null;
  let titles = new Map(); // rule id -> title (the id itself for a rule the service no longer has)
  const titleOf = (rule) => titles.get(rule) || rule;
  let sortKey = "cards";
  let sortDescending = true;

  // ---- formatting ----
  const integer = (value) => INTEGER.format(value);
  const percent = (fraction) => (fraction === null || fraction === undefined ? "—" : `${DECIMAL.format(fraction * 100)} %`);
  // (rounded first, so that -0.01 shows as 0.0 and not as -0.0)
  const minutes = (value) => (value === null || value === undefined ? "—" : DECIMAL.format(Math.round(value * 10) / 10 + 0));

  function parseDay(iso) {
    const [year, month, day] = iso.split("-").map(Number);
    return new Date(Date.UTC(year, month - 1, day));
  }
  const isoDay = (date) => date.toISOString().slice(0, 10);

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = kind || "";
  }

  function element(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  // ---- loading ----
  async function load() {
    const token = $("token").value.trim();
    const since = $("since").value;
    const until = $("until").value;
    if (!token) {
      setStatus("Enter the admin token.", "error");
      return;
    }
    if (since && until && since >= until) {
      setStatus("“Until” must be after “since” (until is exclusive).", "error");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    const query = new URLSearchParams();
    if (since) query.set("since", since);
    if (until) query.set("until", until);
    // The period (never the token) in the page's address, so a reload or a link keeps it.
    const address = query.toString() ? `?${query}` : window.location.pathname;
    window.history.replaceState(null, "", address);

    $("load").disabled = true;
    setStatus("Loading the report…", "busy");
    const get = (path) => fetch(path, {
      headers: {Authorization: `Bearer ${token}`, Accept: "application/json"},
      cache: "no-store",
    });
    try {
      const response = await get(`/admin/report${query.toString() ? `?${query}` : ""}`);
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        hideReport();
        setStatus(`The admin token was refused (HTTP ${response.status}). Check it and try again.`, "error");
        return;
      }
      if (!response.ok) {
        hideReport();
        setStatus(`The report could not be loaded (HTTP ${response.status}): ${await problem(response)}`, "error");
        return;
      }
      const report = await response.json();
      if (!report.totals || report.totals.evaluations === 0) {
        hideReport();
        setStatus(`No evaluations in this period (${periodText(report)}).`, "empty");
        return;
      }
      query.set("limit", String(SAFETY_CASES));
      const cases = await get(`/admin/safety?${query}`);
      if (!cases.ok) {
        hideReport();
        setStatus(`The safety cases could not be loaded (HTTP ${cases.status}): ${await problem(cases)}`, "error");
        return;
      }
      showReport(report, await cases.json());
      const now = new Date();
      const time = `${String(now.getHours()).padStart(2, "0")}:${String(now.getMinutes()).padStart(2, "0")}`;
      setStatus(`Report loaded at ${time}.`, "ok");
    } catch (error) {
      hideReport();
      setStatus(`The report could not be loaded: ${error.message || error}`, "error");
    } finally {
      $("load").disabled = false;
    }
  }

  async function problem(response) {
    try {
      const body = await response.json();
      const issues = (body.issue || []).map((issue) => issue.diagnostics || issue.code).filter(Boolean);
      return issues.join("; ") || response.statusText || "no detail";
    } catch {
      return response.statusText || "no detail";
    }
  }

  function periodText(report) {
    const since = report.since ? `from ${report.since}` : "from the first evaluation";
    let until = "up to now";
    if (report.until) {
      // until is exclusive: the last day shown is the day before it
      const last = new Date(parseDay(report.until).getTime() - 86400000);
      until = `to ${isoDay(last)} inclusive`;
    }
    return `${since} ${until}`;
  }

  function hideReport() {
    $("report").hidden = true;
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    shownReport = null;
  }

  function showReport(report, cases) {
    shownReport = report;
    titles = new Map(report.rules.filter((row) => row.title).map((row) => [row.rule, row.title]));
    for (const row of [...report.safety.rules, ...cases]) if (row.title) titles.set(row.rule, row.title);
    for (const row of cases) if (row.red_flag_title) titles.set(row.red_flag, row.red_flag_title);
    $("report").hidden = false; // first, so the charts measure their boxes
    $("period").textContent = `Period: ${periodText(report)}.`;
    showTotals(report.totals);
    showCritical(report.rules);
    showRules(report.rules);
    showSafety(report, cases);
    showClinicians(report);
    showServices(report.services);
    showIndicators(report.indicators);
    const colours = ruleColours(report);
    const weeks = weekAxis(report.weeks);
    drawWeeks(report, weeks, colours);
    drawOutcomes(report);
    drawReasons(report);
    drawSilent(report, weeks, colours);
  }

  // ---- numbers ----
  function showTotals(totals) {
    for (const node of document.querySelectorAll("#totals [data-field]")) {
      const value = totals[node.dataset.field];
      node.textContent = integer(value);
      node.dataset.value = String(value);
    }
    for (const node of document.querySelectorAll("#totals [data-share]")) {
      const count = totals[node.dataset.share];
      node.textContent = totals.cards ? `${percent(count / totals.cards)} of issued` : "";
    }
  }

  const RULE_COLUMNS = [
    {field: "rule", text: (row) => titleOf(row.rule)},
    {field: "mode", text: (row) => row.mode || "—"},
    {field: "cards", text: (row) => integer(row.cards)},
    {field: "silent_cards", text: (row) => integer(row.silent_cards)},
    {field: "accepted", text: (row) => integer(row.accepted)},
    {field: "overridden", text: (row) => integer(row.overridden)},
    {field: "ignored", text: (row) => integer(row.ignored)},
    {field: "acceptance_rate", text: (row) => (row.advice_only ? "advice only" : percent(row.acceptance_rate))},
    {field: "override_rate", text: (row) => percent(row.override_rate)},
    {field: "mean_minutes_to_feedback", text: (row) => minutes(row.mean_minutes_to_feedback)},
  ];

  // What a rule ranks by: its title for "rule"; no acceptance for an advice-only card.
  function sortValue(row) {
    if (sortKey === "rule") return titleOf(row.rule);
    if (sortKey === "acceptance_rate" && row.advice_only) return null;
    return row[sortKey];
  }

  function compareRules(a, b) {
    const x = sortValue(a);
    const y = sortValue(b);
    let order;
    if (x === null || x === undefined) order = y === null || y === undefined ? 0 : 1; // blanks last
    else if (y === null || y === undefined) order = -1;
    else if (typeof x === "number") order = sortDescending ? y - x : x - y;
    else order = sortDescending ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    return order || a.rule.localeCompare(b.rule);
  }

  function showRules(rules) {
    const body = $("rules").tBodies[0];
    body.replaceChildren();
    for (const row of [...rules].sort(compareRules)) {
      const tr = element("tr", null, {"data-rule": row.rule});
      if (row.mode === "silent") tr.className = "silent";
      for (const column of RULE_COLUMNS) {
        const value = row[column.field];
        const cell = element(column.field === "rule" ? "th" : "td", column.text(row), {
          "data-rule": row.rule,
          "data-field": column.field,
          "data-value": value === null || value === undefined ? "" : String(value),
        });
        if (column.field === "rule") {
          cell.setAttribute("scope", "row");
          cell.setAttribute("title", row.rule);
        }
        if (column.field === "mode") cell.className = `mode ${row.mode || "gone"}`;
        tr.append(cell);
      }
      body.append(tr);
    }
    for (const [index, th] of [...$("rules").tHead.rows[0].cells].entries()) {
      const field = RULE_COLUMNS[index].field;
      th.setAttribute("aria-sort", field === sortKey ? (sortDescending ? "descending" : "ascending") : "none");
    }
  }

  function sortableHeaders() {
    for (const [index, th] of [...$("rules").tHead.rows[0].cells].entries()) {
      const field = RULE_COLUMNS[index].field;
      const button = element("button", th.textContent, {type: "button", class: "sort"});
      button.addEventListener("click", () => {
        if (sortKey === field) sortDescending = !sortDescending;
        else {
          sortKey = field;
          sortDescending = field !== "rule" && field !== "mode"; // numbers: biggest first
        }
        if (shownReport) showRules(shownReport.rules);
      });
      th.replaceChildren(button);
    }
  }

  function fillTable(table, rows, key, fields) {
    const body = $(table).tBodies[0];
    body.replaceChildren();
    for (const row of rows) {
      const tr = element("tr", null, {[`data-${key}`]: row[key]});
      const head = element("th", row[key], {scope: "row"});
      if (key === "indicator") head.className = `indicator ${row[key]}`;
      tr.append(head);
      for (const field of fields) {
        tr.append(element("td", integer(row[field]), {
          [`data-${key}`]: row[key], "data-field": field, "data-value": String(row[field]),
        }));
      }
      body.append(tr);
    }
  }

  // Critical (red-flag) cards overridden or left unanswered: what a committee looks at first.
  function showCritical(rules) {
    const missed = rules.filter((row) => row.indicator === "critical" && row.overridden + row.ignored > 0)
      .sort((a, b) => b.overridden + b.ignored - (a.overridden + a.ignored) || a.rule.localeCompare(b.rule));
    $("critical").hidden = missed.length === 0;
    const overridden = missed.reduce((sum, row) => sum + row.overridden, 0);
    const ignored = missed.reduce((sum, row) => sum + row.ignored, 0);
    $("critical-summary").textContent =
      `${integer(overridden)} critical card${overridden === 1 ? " was" : "s were"} overridden and ` +
      `${integer(ignored)} left unanswered (ignored).`;
    $("critical-rules").replaceChildren(...missed.map((row) => {
      const item = element("li", null, {"data-rule": row.rule});
      item.append(element("strong", titleOf(row.rule), {title: row.rule}));
      item.append(`: ${integer(row.overridden)} overridden, ${integer(row.ignored)} ignored of ${integer(row.cards)} issued`);
      return item;
    }));
  }

  function cells(tr, key, values) {
    for (const [field, text, value] of values) {
      tr.append(element("td", text, {[`data-${key}`]: tr.dataset[key], "data-field": field, "data-value": value === null || value === undefined ? "" : String(value)}));
    }
  }

  function showSafety(report, cases) {
    const days = report.safety.window_days;
    $("safety-note").textContent = (report.linked ? "" : "No pseudonym key is configured (CDS_PSEUDONYM_KEY): new evaluations are not linked, so nothing new is followed up. ") +
      `A card that reassured, removed an order or referred routinely is followed up when its patient is evaluated again within ${days} days, and is a possible miss when a red-flag rule fires then. Read each rate with its count.`;
    const body = $("safety").tBodies[0];
    body.replaceChildren();
    for (const row of report.safety.rules) {
      const tr = element("tr", null, {"data-rule": row.rule});
      tr.append(element("th", titleOf(row.rule), {scope: "row", title: row.rule}));
      cells(tr, "rule", [
        ["followed_up", integer(row.followed_up), row.followed_up],
        ["possible_misses", integer(row.possible_misses), row.possible_misses],
        ["miss_rate", `${percent(row.miss_rate)} of ${integer(row.followed_up)}`, row.miss_rate],
      ]);
      body.append(tr);
    }
    const list = $("safety-cases").tBodies[0];
    list.replaceChildren();
    for (const row of cases) {
      const tr = element("tr", null, {"data-card": row.card});
      const card = element("td", null, {"data-field": "card"});
      card.append(element("strong", titleOf(row.rule), {title: row.rule}), element("br"), row.summary);
      tr.append(card);
      const evidence = row.evidence.map((e) => `${e.display} (${e.system} ${e.code})${e.date ? `, ${e.date}` : ""}`).join("; ");
      cells(tr, "card", [
        ["card_date", row.card_date, row.card_date],
        ["red_flag", titleOf(row.red_flag), row.red_flag],
        ["found_date", row.found_date, row.found_date],
        ["days_later", integer(row.days_later), row.days_later],
        ["evidence", evidence, evidence],
      ]);
      tr.querySelector('[data-field="red_flag"]').setAttribute("title", row.red_flag);
      list.append(tr);
    }
    note("safety-cases-note", cases.length === 0 ? "No possible miss in this period."
      : cases.length === SAFETY_CASES ? `The ${SAFETY_CASES} most recently found; GET /admin/safety pages through all.` : "");
  }

  function showClinicians(report) {
    const {min_cell: minimum, rows} = report.clinicians;
    $("clinicians-note").textContent = `Clinicians by pseudonym (a keyed hash of their user id; the full one on hover). Fewer than ${minimum} cards of a rule: the numbers are not shown. ` +
      "Orders removed and kept against advice are for rules whose card advises removing the order. To hand one clinician their own page: GET /admin/clinicians/{pseudonym}.";
    const body = $("clinicians").tBodies[0];
    body.replaceChildren();
    const count = (value) => (value === null ? "—" : integer(value));
    for (const row of rows) {
      const tr = element("tr", null, {"data-clinician": row.clinician, "data-rule": row.rule});
      tr.append(element("th", row.clinician.slice(0, 12), {scope: "row", title: row.clinician, class: "pseudonym"}));
      tr.append(element("td", titleOf(row.rule), {title: row.rule, "data-field": "rule"}));
      cells(tr, "rule", [
        ["cards", row.suppressed ? `< ${minimum}` : count(row.cards), row.cards],
        ["accepted", count(row.accepted), row.accepted],
        ["overridden", count(row.overridden), row.overridden],
        ["ignored", count(row.ignored), row.ignored],
        ["removed_share", percent(row.removed_share), row.removed_share],
        ["kept_share", percent(row.kept_share), row.kept_share],
      ]);
      if (row.suppressed) tr.className = "suppressed";
      body.append(tr);
    }
  }

  const showServices = (services) =>
    fillTable("services", services, "service", ["evaluations", "cards", "silent_cards"]);

  function showIndicators(indicators) {
    const order = {critical: 0, warning: 1, info: 2};
    const sorted = [...indicators].sort((a, b) => (order[a.indicator] ?? 9) - (order[b.indicator] ?? 9));
    fillTable("indicators", sorted, "indicator", ["cards", "accepted", "overridden", "ignored"]);
  }

  // ---- charts ----
  function ruleColours(report) {
    const volume = new Map();
    for (const row of report.rules) volume.set(row.rule, row.cards + row.silent_cards);
    const ranked = [...volume.keys()].sort((a, b) => volume.get(b) - volume.get(a) || a.localeCompare(b));
    return new Map(ranked.map((rule, index) => [rule, PALETTE[index % PALETTE.length]]));
  }

  function weekAxis(weeks) {
    const days = [...new Set(weeks.map((row) => row.week))].sort();
    if (days.length === 0) return [];
    const axis = [];
    const last = parseDay(days[days.length - 1]).getTime();
    // every week between the first and the last, so quiet weeks show as gaps, not as nothing
    for (let time = parseDay(days[0]).getTime(); time <= last; time += 7 * 86400000) axis.push(isoDay(new Date(time)));
    for (const day of days) if (!axis.includes(day)) axis.push(day); // weeks not 7 days apart
    return axis.sort();
  }

  const weekLabels = (axis) => axis;

  function draw(id, config) {
    if (charts.has(id)) charts.get(id).destroy();
    charts.set(id, new Chart($(id), config));
  }

  function baseOptions(extra) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: {mode: "index", intersect: false},
      plugins: {legend: {position: "bottom", labels: {boxWidth: 12, boxHeight: 12}}},
      ...extra,
    };
  }

  function weeklySeries(report, axis, field, rules) {
    const index = new Map(axis.map((day, position) => [day, position]));
    const series = new Map(rules.map((rule) => [rule, new Array(axis.length).fill(0)]));
    const other = new Array(axis.length).fill(0);
    for (const row of report.weeks) {
      if (!row[field]) continue;
      (series.get(row.rule) || other)[index.get(row.week)] += row[field];
    }
    return {series, other};
  }

  function weekTooltip(axis) {
    return {
      callbacks: {
        title: (items) => (items.length ? `Week of ${axis[items[0].dataIndex]}` : ""),
        footer: (items) => `Total: ${integer(items.reduce((sum, item) => sum + item.parsed.y, 0))}`,
      },
      filter: (item) => item.parsed.y > 0,
      itemSort: (a, b) => b.parsed.y - a.parsed.y,
    };
  }

  function stackedWeeks(id, report, axis, colours, field) {
    const totals = new Map();
    for (const row of report.weeks) totals.set(row.rule, (totals.get(row.rule) || 0) + row[field]);
    const ranked = [...totals.entries()].filter(([, count]) => count > 0)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([rule]) => rule);
    const named = ranked.length > TOP_RULES + 1 ? ranked.slice(0, TOP_RULES) : ranked;
    const {series, other} = weeklySeries(report, axis, field, named);
    const datasets = named.map((rule) => ({
      label: titleOf(rule), data: series.get(rule), backgroundColor: colours.get(rule), stack: "rules", maxBarThickness: 64,
    }));
    if (ranked.length > named.length) {
      datasets.push({
        label: `Other rules (${ranked.length - named.length})`, data: other,
        backgroundColor: OTHER_COLOUR, stack: "rules", maxBarThickness: 64,
      });
    }
    draw(id, {
      type: "bar",
      data: {labels: weekLabels(axis), datasets},
      options: baseOptions({
        scales: {
          x: {stacked: true, grid: {display: false}},
          y: {stacked: true, beginAtZero: true, ticks: {precision: 0}, title: {display: true, text: "cards"}},
        },
        plugins: {
          legend: {position: "bottom", labels: {boxWidth: 12, boxHeight: 12}},
          tooltip: weekTooltip(axis),
        },
      }),
    });
    return ranked.length;
  }

  function drawWeeks(report, axis, colours) {
    stackedWeeks("chart-weeks", report, axis, colours, "cards");
  }

  function drawSilent(report, axis, colours) {
    const rules = stackedWeeks("chart-silent", report, axis, colours, "silent_cards");
    note("silent-note", rules ? "" : "No silent rule would have issued a card in this period.");
  }

  function note(id, text) {
    $(id).textContent = text;
    $(id).hidden = !text;
  }

  // Bar charts with one row per label grow with their labels (CSSOM: allowed by the CSP).
  function fitHeight(boxId, rows) {
    $(boxId).style.height = `${Math.max(320, 70 + Math.ceil(rows * 28))}px`;
  }

  const shortLabel = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);

  // A long label as lines of about `width` characters (Chart.js draws an array as lines).
  function wrapped(text, width) {
    const lines = [];
    for (const word of text.split(/\s+/)) {
      const last = lines.length - 1;
      if (last >= 0 && lines[last].length + 1 + word.length <= width) lines[last] += ` ${word}`;
      else lines.push(word);
    }
    return lines.length > 3 ? [...lines.slice(0, 2), shortLabel(lines.slice(2).join(" "), width)] : lines;
  }

  function drawOutcomes(report) {
    const rules = report.rules.filter((row) => row.cards > 0)
      .sort((a, b) => b.cards - a.cards || a.rule.localeCompare(b.rule));
    fitHeight("outcomes-box", rules.length);
    const datasets = ["accepted", "overridden", "ignored"].map((outcome) => ({
      label: outcome, data: rules.map((row) => row[outcome]),
      backgroundColor: OUTCOME_COLOURS[outcome], stack: "outcomes", maxBarThickness: 22,
    }));
    draw("chart-outcomes", {
      type: "bar",
      data: {labels: rules.map((row) => titleOf(row.rule)), datasets},
      options: baseOptions({
        indexAxis: "y",
        scales: {
          x: {stacked: true, beginAtZero: true, ticks: {precision: 0}, title: {display: true, text: "issued cards"}},
          y: {stacked: true, grid: {display: false}, ticks: {autoSkip: false, callback(value) {
            return shortLabel(this.getLabelForValue(value), 36);
          }}},
        },
        plugins: {
          legend: {position: "bottom", labels: {boxWidth: 12, boxHeight: 12}},
          tooltip: {callbacks: {
            label: (item) => {
              const row = rules[item.dataIndex];
              const share = row.cards ? ` (${percent(item.parsed.x / row.cards)})` : "";
              return `${item.dataset.label}: ${integer(item.parsed.x)}${share}`;
            },
            footer: (items) => (items.length ? `Issued: ${integer(rules[items[0].dataIndex].cards)}` : ""),
          }},
        },
      }),
    });
  }

  function drawReasons(report) {
    const reasons = new Map();
    for (const row of report.override_reasons) {
      const key = `${row.code ?? ""}\u0000${row.display}`;
      const reason = reasons.get(key) || {code: row.code, display: row.display, count: 0, rules: new Map()};
      reason.count += row.count;
      reason.rules.set(row.rule, (reason.rules.get(row.rule) || 0) + row.count);
      reasons.set(key, reason);
    }
    const ranked = [...reasons.values()].sort((a, b) => b.count - a.count || a.display.localeCompare(b.display));
    const top = ranked.slice(0, TOP_REASONS);
    fitHeight("reasons-box", top.length * 1.5);
    const hidden = ranked.length - top.length;
    note("reasons-note", top.length === 0 ? "No card was overridden in this period."
      : hidden > 0 ? `${hidden} less frequent reason${hidden === 1 ? "" : "s"} not shown.` : "");
    draw("chart-reasons", {
      type: "bar",
      data: {
        labels: top.map((reason) => reason.display || reason.code || "(no reason given)"),
        datasets: [{label: "overrides", data: top.map((reason) => reason.count), backgroundColor: OUTCOME_COLOURS.overridden, maxBarThickness: 28}],
      },
      options: baseOptions({
        indexAxis: "y",
        interaction: {mode: "nearest", axis: "y", intersect: false},
        scales: {
          x: {beginAtZero: true, ticks: {precision: 0}, title: {display: true, text: "overridden cards"}},
          y: {grid: {display: false}, ticks: {autoSkip: false, callback(value) {
            return wrapped(this.getLabelForValue(value), 28);
          }}},
        },
        plugins: {
          legend: {display: false},
          tooltip: {callbacks: {
            title: (items) => {
              if (!items.length) return "";
              const reason = top[items[0].dataIndex];
              return reason.code ? `${reason.display} (${reason.code})` : reason.display;
            },
            label: (item) => `${integer(item.parsed.x)} overrides`,
            afterBody: (items) => {
              if (!items.length) return [];
              const byRule = [...top[items[0].dataIndex].rules.entries()].sort((a, b) => b[1] - a[1]);
              const lines = byRule.slice(0, 6).map(([rule, count]) => `  ${titleOf(rule)}: ${integer(count)}`);
              if (byRule.length > 6) lines.push(`  and ${byRule.length - 6} more rules`);
              return lines;
            },
          }},
        },
      }),
    });
  }

  // ---- start ----
  function start() {
    if (typeof Chart === "undefined") {
      setStatus("The chart library did not load (/static/vendor/chart.umd.min.js).", "error");
      return;
    }
    const style = getComputedStyle(document.body);
    Chart.defaults.font.family = style.fontFamily;
    Chart.defaults.color = style.color;
    sortableHeaders();
    const params = new URLSearchParams(window.location.search);
    for (const name of ["since", "until"]) {
      const value = params.get(name);
      if (value && /^\d{4}-\d{2}-\d{2}$/.test(value)) $(name).value = value;
    }
    $("query").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) {
      $("token").value = token;
      load();
    }
  }

  start();
})();
