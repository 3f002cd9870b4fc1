// AIMatrix node dashboard: renders the daemon's snapshots (server-sent events from
// /dashboard/events, read with fetch(), about one a second while something changes) and
// sends the owner's controls to /dashboard/api/... (pause, resume, settings). No
// framework; uPlot draws the earnings chart. Every value from the node is put in the page
// as text, never as HTML.
//
// Login: the link of `aimx node dashboard` carries this run's dashboard token in its
// fragment (#token=...), which no server sees. It moves to sessionStorage (this origin
// only: the host and the port) and out of the address bar, and every call sends it as
// "Authorization: Bearer". No cookie: a browser would send one to every port of the host.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let chart = null, chartKey = "", updates = 0, lastAt = 0, snap = null;
  const KEY = "aimx_dashboard_token";
  let token = takeToken(), retryMs = 2000, loggedOut = false;

  function takeToken() {
    const given = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (given) {
      if (given[1]) sessionStorage.setItem(KEY, decodeURIComponent(given[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY);
  }

  // no token, or one the node refuses (a link of an earlier run): say how to get one
  function logIn(why) {
    loggedOut = true;
    sessionStorage.removeItem(KEY);
    token = null;
    $("login-why").textContent = why;
    document.body.dataset.login = "needed";
    $("live").textContent = "not logged in";
  }

  function authorized(init) {
    return { ...init, cache: "no-store", headers: { ...(init.headers || {}), authorization: "Bearer " + token } };
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v; else if (k in e) e[k] = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
    return e;
  }
  const credits = (micro) => (micro / 1e6).toLocaleString(undefined,
    { minimumFractionDigits: 2, maximumFractionDigits: 6 }) + " cr";
  const short = (id) => (id || "").slice(0, 10) + "…";
  function duration(ms) {
    if (ms == null) return "–";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }
  const bytes = (n) => n == null ? "–" : (n / 2 ** 30).toFixed(1) + " GiB";
  function rows(tbody, items, cells) {
    tbody.replaceChildren(...items.map((it) => el("tr", {}, ...cells(it).map((c) =>
      c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))));
  }
  function show(id, on) { $(id).hidden = !on; }

  function renderState(state, avail) {
    const badge = $("state");
    badge.textContent = state.state;
    badge.dataset.state = state.state;
    $("reason").textContent = state.reason || "";
    const paused = avail ? !!avail.paused : state.state === "paused";
    const canPause = !!(snap && snap.provider);
    $("pause").hidden = !canPause || paused;
    $("resume").hidden = !canPause || !paused;
  }

  function renderEarnings(e) {
    $("earn-today").textContent = credits(e.today);
    $("earn-week").textContent = credits(e.week);
    $("earn-all").textContent = credits(e.all);
    const key = JSON.stringify(e.chart);
    show("chart", e.chart.length > 0);
    show("chart-none", e.chart.length === 0);
    if (key === chartKey || e.chart.length === 0 || typeof uPlot === "undefined") return;
    chartKey = key;
    const xs = e.chart.map((p) => p[0]), ys = e.chart.map((p) => p[1] / 1e6);
    const box = $("chart");
    const width = Math.max(200, box.clientWidth || 280);
    if (chart === null) {
      chart = new uPlot({
        width, height: 160, legend: { show: false },
        series: [{}, { label: "earned", stroke: "#2f5bd3", fill: "rgba(47,91,211,.12)", width: 2 }],
        axes: [{}, { size: 76, values: (u, vals) => vals.map((v) => +v.toFixed(6) + " cr") }],
      }, [xs, ys], box);
    } else {
      chart.setData([xs, ys]);
    }
  }

  function renderProvider(p, now) {
    show("earnings-card", true);
    show("running-card", true);
    renderEarnings(p.earnings);
    rows($("running"), p.running, (j) => [
      el("span", { class: "id", title: j.job_id }, short(j.job_id)),
      // past the bid's estimate the bar only says "still running"
      j.progress < 0.99 ? el("progress", { max: 1, value: j.progress, title: Math.round(j.progress * 100) + " %" })
        : el("progress", { title: "running longer than estimated" }),
      duration(j.duration_ms),
      credits(j.price),
    ]);
    show("running-none", p.running.length === 0);
    show("recent-card", true);
    rows($("recent"), p.recent, (j) => [
      el("span", { class: "id", title: j.job_id }, short(j.job_id)),
      el("td", { class: "outcome-" + j.outcome }, j.outcome),
      duration(j.duration_ms),
      credits(j.paid),
      j.reason,
    ]);
    show("recent-none", p.recent.length === 0);
    const idle = p.running.length === 0;
    show("why-card", idle && p.why.hints && p.why.hints.length > 0);
    $("why").replaceChildren(...(p.why.hints || []).map((h) => el("li", {}, h)));
    const counts = Object.entries(p.why.outcomes || {}).map(([k, v]) => k + " " + v).join(", ");
    $("why-counts").textContent = p.why.announcements + " announcements in the last hour"
      + (counts ? ": " + counts : "");
  }

  function renderRequester(r) {
    show("requester-card", true);
    $("spend").textContent = credits(r.spend);
    $("submitted").textContent = r.count;
    rows($("req-jobs"), r.jobs, (j) => [
      el("span", { class: "id", title: j.job_id }, short(j.job_id)),
      el("td", { class: j.status === "verified" ? "outcome-paid" : j.status === "pending" ? "" : "outcome-failed" },
        j.status === "pending" ? j.phase : j.status),
      j.bids + (j.no_bids ? " (+" + j.no_bids + " declined)" : ""),
      credits(j.paid),
      j.reason,
    ]);
  }

  function renderHardware(h) {
    const items = [["CPU", h.cpu_percent + " % of " + h.cpus + " CPUs"],
      ["daemon", h.daemon_cpu_percent + " % of a CPU"],
      ["memory", bytes(h.memory_available) + " free of " + bytes(h.memory_total)]];
    if (h.gpus.length === 0) items.push(["GPU", "no GPU" + (h.gpu_reason ? " (" + h.gpu_reason + ")" : "")]);
    for (const g of h.gpus) {
      items.push(["GPU " + g.index, g.error ? g.name + ": " + g.error : g.name + ": " + g.use_percent
        + " %, " + g.temperature_c + " °C, " + bytes(g.memory_used) + " of " + bytes(g.memory_total)]);
    }
    const p = h.profile;
    if (p) {
      items.push(["probe", p.cpu_cores + " cores, " + p.memory_mb + " MB, score " + p.bench_score]);
      items.push(["runs", p.execution_providers.join(", ") + " (" + p.determinism_class + ")"]);
    }
    $("hardware").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function render(s) {
    if (s.error) { $("live").textContent = s.error; return; }
    snap = s;
    const st = s.status;
    $("peer").textContent = st.peer_id;
    $("peer").title = st.peer_id;
    $("roles").textContent = st.roles.join(", ");
    renderState(s.state, st.availability);
    $("balance").textContent = credits(st.balance);
    $("stake").textContent = credits(st.stake);
    $("reputation").textContent = st.reputation.toFixed(3);
    $("height").textContent = st.height;
    $("chain").textContent = st.chain_id;
    if (updates === 0) loadSettings();
    if (s.provider) renderProvider(s.provider, s.now_ms);
    if (s.requester) renderRequester(s.requester);
    renderHardware(s.hardware);
    $("peers").textContent = s.peers.connected;
    $("reach").textContent = s.peers.reachability + (s.peers.relay ? " via relay " + short(s.peers.relay) : "");
    $("addresses").replaceChildren(...st.addresses.map((a) => el("li", {}, a)));
    rows($("history"), s.ledger.history, (t) => [t.height, t.kind, t.from, t.detail]);
    show("history-none", s.ledger.history.length === 0);
    updates += 1;
    lastAt = Date.now();
    document.body.dataset.updates = String(updates);
    $("live").textContent = "live · updated " + new Date(s.now_ms).toLocaleTimeString();
  }

  async function call(method, path, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch("/dashboard/api/" + path, authorized(init));
    if (r.status === 401) logIn("The node refused this page's login: it has restarted since the link was made.");
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
    return data;
  }

  async function pauseOrResume(what) {
    const button = $(what);
    button.disabled = true;
    try {
      const avail = await call("POST", what, {});
      renderState({ state: avail.state, reason: avail.reason }, avail);
    } catch (err) {
      $("reason").textContent = what + " failed: " + err.message;
    } finally {
      button.disabled = false;
    }
  }

  const GROUPS = [
    ["When it may work", (k) => k.includes(".availability.")],
    ["Pause while I use the machine", (k) => k.includes(".pause_on_use.") || k.endsWith(".on_pause")],
    ["Price", (k) => k.endsWith("price_floor") || k.startsWith("requester.")],
    ["Resources", () => true],
  ];

  async function loadSettings() {
    let cfg;
    try { cfg = await call("GET", "config"); } catch (err) { return; }
    // a contributor's settings on a contributor, a requester's on a requester
    const roles = snap ? snap.status.roles : [];
    const editable = Object.entries(cfg.settings || {}).filter(([k, s]) => s.editable
      && roles.includes(k.split(".")[0]));
    if (editable.length === 0) return;
    const form = $("settings");
    const left = new Map(editable);
    const sets = [];
    for (const [title, test] of GROUPS) {
      const keys = [...left.keys()].filter(test);
      if (keys.length === 0) continue;
      const fs = el("fieldset", {}, el("legend", {}, title));
      for (const key of keys) {
        const s = left.get(key);
        left.delete(key);
        const attrs = { name: key, title: s.description };
        let input;
        if (typeof s.value === "boolean") input = el("input", { ...attrs, type: "checkbox", checked: s.value });
        else if (typeof s.value === "number") input = el("input", { ...attrs, type: "number", value: s.value });
        else {
          // an empty value's meaning, from the description's "(empty: ...)"
          const empty = /\(empty: ([^)]*)\)/.exec(s.description || "");
          input = el("input", { ...attrs, type: "text", value: s.value ?? "", placeholder: empty ? empty[1] : "" });
        }
        input.dataset.original = JSON.stringify(s.value);
        fs.append(el("label", {}, el("span", { title: s.description },
          key.split(".").slice(1).join(" ").replaceAll("_", " ")), input));
      }
      sets.push(fs);
    }
    form.replaceChildren(...sets, el("button", { type: "submit" }, "Save"));
    show("settings-card", true);
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    const changes = {};
    for (const input of $("settings").querySelectorAll("input[name]")) {
      const value = input.type === "checkbox" ? input.checked
        : input.type === "number" ? Number(input.value) : input.value;
      if (JSON.stringify(value) === input.dataset.original) continue;
      let node = changes;
      const parts = input.name.split(".");
      for (const p of parts.slice(0, -1)) node = node[p] = node[p] || {};
      node[parts[parts.length - 1]] = value;
    }
    const msg = $("settings-msg");
    if (Object.keys(changes).length === 0) { msg.textContent = "Nothing changed."; return; }
    try {
      await call("PUT", "config", changes);
      msg.className = "small";
      msg.textContent = "Saved to config.toml.";
      await loadSettings();
    } catch (err) {
      msg.className = "small error";
      msg.textContent = err.message;
    }
  }

  // one server-sent event ("event: NAME\ndata: ...", fields per the EventSource format)
  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (name === "snapshot" && data.length) render(JSON.parse(data.join("\n")));
    return name;
  }

  // the event stream, read with fetch() (EventSource cannot send the token); again after
  // retryMs when it ends or fails
  async function connect() {
    let full = false;
    try {
      const r = await fetch("/dashboard/events", authorized({}));
      if (r.status === 401) {
        logIn("The node refused this page's login: it has restarted since the link was made.");
        return;
      }
      if (r.status === 503) full = true;
      else if (r.ok && r.body) {
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replaceAll("\r\n", "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            if (dispatch(buffer.slice(0, end)) === "full") full = true;
            buffer = buffer.slice(end + 2);
          }
        }
      }
    } catch (err) {
      // the node went away: retried below
    }
    if (full) {
      $("live").textContent = "too many dashboards are open on this node: close one";
      return;
    }
    if (loggedOut) return;
    if (Date.now() - lastAt > 3000) $("live").textContent = "the node is not answering; retrying…";
    setTimeout(connect, retryMs);
  }

  $("pause").addEventListener("click", () => pauseOrResume("pause"));
  $("resume").addEventListener("click", () => pauseOrResume("resume"));
  $("settings").addEventListener("submit", saveSettings);
  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(200, $("chart").clientWidth), height: 160 });
  });
  if (token) connect();
  else logIn("This page was opened without its login link.");
})();
