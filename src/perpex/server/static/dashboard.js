// perpex dashboard. A client of the server's Binance USDⓈ-M API like any bot:
// - the admin token comes from the URL fragment (#admin=<token>, printed at server start);
//   with it the page asks GET /admin/demo-key for the demo account's key and secret;
// - REST calls are signed as ccxt signs them (timestamp first, the params, recvWindow, then
//   signature = hex HMAC-SHA256 over that query string; GET/DELETE in the query, POST/PUT as a
//   form body) with WebCrypto (loopback is a secure context);
// - live data comes over the streams bots use: /stream?streams=... (combined) for the market
//   and /ws/<listenKey> for the account; REST polling every 2 s keeps positions, orders and the
//   account right if a stream is late or down.
// Numbers are shown as the API gives them (decimal strings); floats only decide colours/bars.
"use strict";

(() => {
  const POLL_MS = 2000;
  const RECV_WINDOW = "10000";
  const BOOK_LEVELS = 12;
  const TAPE_ROWS = 40;
  const LIQ_ROWS = 60;
  const CHART_POINTS = 3600;
  const PREVIEW_DEBOUNCE_MS = 200;

  const $ = (id) => document.getElementById(id);
  const enc = new TextEncoder();

  const S = {
    symbol: "BTCUSDT",
    markets: {},          // symbol -> {tick, step, base}
    admin: null,          // admin token
    apiKey: null,
    hmacKey: null,        // CryptoKey
    offsetMs: 0,          // server time - local time
    side: "BUY",
    maxLeverage: {},      // symbol -> from the leverage brackets
    leverage: {},         // symbol -> leverage in force (positionRisk v2)
    marginType: {},       // symbol -> "ISOLATED" | "CROSSED"
    positions: [],        // positionRisk v3 rows with a position
    account: null,
    nextFundingMs: 0,
    series: { index: [[], []], mark: [[], []], last: [[], []] },
    liqs: [],             // {time, symbol, side, qty, price, you}
    lastDepthMs: 0,
    lastMarkMs: 0,
    lastTradeMs: 0,
    marketWs: null,
    marketGen: 0,
    userWs: null,
    listenKey: null,
    chartDirty: false,
    previewSeq: 0,
    speedShown: false,
  };

  // ---- small helpers -------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(code, msg, status) {
      super(`${code}: ${msg}`);
      this.code = code;
      this.status = status;
    }
  }

  function log(text, isError) {
    const box = $("log");
    const div = document.createElement("div");
    div.textContent = text;
    if (isError) div.className = "err";
    box.prepend(div);
    while (box.children.length > 4) box.lastChild.remove();
    setTimeout(() => div.remove(), isError ? 9000 : 5000);
  }

  function setMsg(id, text, ok) {
    const el = $(id);
    el.textContent = text;
    el.className = "msg " + (ok === undefined ? "" : ok ? "ok" : "err");
  }

  const num = (s) => parseFloat(s);
  const isZero = (s) => s === undefined || s === null || num(s) === 0;
  const now = () => Date.now() + S.offsetMs;

  function hms(ms) {
    const d = new Date(ms);
    return d.toTimeString().slice(0, 8);
  }

  function countdown(ms) {
    if (ms <= 0) return "00:00:00";
    const s = Math.floor(ms / 1000);
    const p = (v) => String(v).padStart(2, "0");
    return `${p(Math.floor(s / 3600))}:${p(Math.floor((s % 3600) / 60))}:${p(s % 60)}`;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function decimalsOf(step) {
    const s = String(step);
    const i = s.indexOf(".");
    return i < 0 ? 0 : s.replace(/0+$/, "").length - i - 1;
  }

  // ---- REST ----------------------------------------------------------------------------------
  async function parse(resp) {
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      throw new ApiError(-1000, `bad JSON from ${resp.url}`, resp.status);
    }
    if (!resp.ok) {
      const code = data && data.code !== undefined ? data.code : resp.status;
      const msg = data && data.msg ? data.msg : resp.statusText;
      throw new ApiError(code, msg, resp.status);
    }
    return data;
  }

  async function pub(path, params) {
    const qs = params ? "?" + new URLSearchParams(params).toString() : "";
    return parse(await fetch(path + qs));
  }

  async function hmacHex(message) {
    const sig = await crypto.subtle.sign("HMAC", S.hmacKey, enc.encode(message));
    return Array.from(new Uint8Array(sig), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // As ccxt: timestamp first, then the params, then recvWindow; the signature last.
  async function signed(method, path, params) {
    if (!S.hmacKey) throw new ApiError(-2014, "no API key yet (open the URL with #admin=...)");
    const items = [["timestamp", String(Math.round(now()))]];
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === "") continue;
      items.push([k, String(v)]); // booleans as true/false, numbers as digits
    }
    items.push(["recvWindow", RECV_WINDOW]);
    const query = new URLSearchParams(items).toString();
    const payload = `${query}&signature=${await hmacHex(query)}`;
    const headers = { "X-MBX-APIKEY": S.apiKey };
    if (method === "GET" || method === "DELETE") {
      return parse(await fetch(`${path}?${payload}`, { method, headers }));
    }
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    return parse(await fetch(path, { method, headers, body: payload }));
  }

  async function admin(method, path, form, query) {
    if (!S.admin) throw new ApiError(-2015, "no admin token (open the URL with #admin=...)");
    const headers = { "X-Admin-Token": S.admin };
    const init = { method, headers };
    if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      init.body = new URLSearchParams(form).toString();
    }
    const qs = query ? "?" + new URLSearchParams(query).toString() : "";
    return parse(await fetch(path + qs, init));
  }

  // ---- start-up ------------------------------------------------------------------------------
  function readToken() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = hash.get("admin");
    if (token) {
      sessionStorage.setItem("perpex-admin", token);
      return token;
    }
    return sessionStorage.getItem("perpex-admin");
  }

  async function loadKey() {
    S.admin = readToken();
    if (!S.admin) {
      showBanner("Read-only: open the dashboard URL printed at server start (…/#admin=<token>) " +
        "to trade with the demo account and control the market.");
      return;
    }
    if (!window.crypto || !crypto.subtle) {
      showBanner("WebCrypto is not available: open the dashboard on localhost / 127.0.0.1.");
      return;
    }
    const body = await admin("GET", "/admin/demo-key");
    const key = body.apiKey || body.api_key || body.key;
    const secret = body.secret || body.secretKey || body.api_secret || body.apiSecret;
    if (!key || !secret) throw new ApiError(-1000, "GET /admin/demo-key gave no key and secret");
    S.apiKey = key;
    S.hmacKey = await crypto.subtle.importKey(
      "raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  }

  function showBanner(text) {
    const b = $("banner");
    b.textContent = text;
    b.hidden = false;
  }

  async function loadMarkets() {
    try {
      const t = await pub("/fapi/v1/time");
      S.offsetMs = t.serverTime - Date.now();
    } catch (e) { /* same machine: the local clock will do */ }
    const info = await pub("/fapi/v1/exchangeInfo");
    const select = $("symbol");
    select.textContent = "";
    for (const s of info.symbols) {
      const f = Object.fromEntries((s.filters || []).map((x) => [x.filterType, x]));
      S.markets[s.symbol] = {
        tick: f.PRICE_FILTER ? f.PRICE_FILTER.tickSize : "0.1",
        step: f.LOT_SIZE ? f.LOT_SIZE.stepSize : "0.001",
        base: s.baseAsset,
      };
      const opt = el("option", "", s.symbol);
      opt.value = s.symbol;
      select.append(opt);
    }
    if (!S.markets[S.symbol]) S.symbol = Object.keys(S.markets)[0];
    select.value = S.symbol;
  }

  async function loadSymbolSettings() {
    const sym = S.symbol;
    $("qty-unit").textContent = S.markets[sym] ? S.markets[sym].base : "";
    if (!S.hmacKey) return;
    try {
      const brackets = await signed("GET", "/fapi/v1/leverageBracket", { symbol: sym });
      const row = (Array.isArray(brackets) ? brackets : [brackets]).find((b) => b.symbol === sym);
      if (row) S.maxLeverage[sym] = Math.max(...row.brackets.map((b) => b.initialLeverage));
    } catch (e) { log(`leverageBracket: ${e.message}`, true); }
    try {
      const rows = await signed("GET", "/fapi/v2/positionRisk", { symbol: sym });
      const row = rows.find((r) => r.symbol === sym);
      if (row) {
        S.leverage[sym] = parseInt(row.leverage, 10);
        S.marginType[sym] = row.marginType === "isolated" ? "ISOLATED" : "CROSSED";
      }
    } catch (e) { log(`positionRisk v2: ${e.message}`, true); }
    const slider = $("leverage");
    slider.max = String(S.maxLeverage[sym] || 125);
    if (S.leverage[sym]) slider.value = String(S.leverage[sym]);
    if (S.marginType[sym]) $("margin-mode").value = S.marginType[sym];
    showLeverage();
    schedulePreview();
  }

  // ---- chart ---------------------------------------------------------------------------------
  const CHART_LAYOUT = {
    paper_bgcolor: "#161a1e",
    plot_bgcolor: "#161a1e",
    font: { color: "#b7bdc6", size: 11 },
    margin: { l: 10, r: 70, t: 6, b: 28 },
    showlegend: false,
    xaxis: { type: "date", gridcolor: "#2b3139", zeroline: false },
    yaxis: { side: "right", gridcolor: "#2b3139", zeroline: false, tickformat: ",.1f" },
    uirevision: "keep",
    hovermode: "x unified",
  };

  function pushPoint(name, tMs, value) {
    const [xs, ys] = S.series[name];
    if (!Number.isFinite(value)) return;
    if (xs.length && tMs < xs[xs.length - 1]) return; // out of order (a seed after live data)
    xs.push(tMs);
    ys.push(value);
    if (xs.length > CHART_POINTS) {
      xs.splice(0, xs.length - CHART_POINTS);
      ys.splice(0, ys.length - CHART_POINTS);
    }
    S.chartDirty = true;
  }

  function drawChart() {
    if (!S.chartDirty || !window.Plotly) return;
    S.chartDirty = false;
    const line = (name, color, width, dash) => ({
      name, type: "scatter", mode: "lines",
      x: S.series[name][0].map((t) => new Date(t)), y: S.series[name][1],
      line: { color, width, dash, shape: "hv" },
    });
    const mine = S.liqs.filter((l) => l.symbol === S.symbol);
    const traces = [
      line("index", "#848e9c", 1.2, "dot"),
      line("mark", "#f0b90b", 1.6),
      line("last", "#3d8bfd", 1.2),
      {
        name: "liquidations", type: "scatter", mode: "markers",
        x: mine.map((l) => new Date(l.time)), y: mine.map((l) => num(l.price)),
        text: mine.map((l) => `${l.you ? "YOUR " : ""}liquidation ${l.side} ${l.qty} @ ${l.price}`),
        hoverinfo: "text",
        marker: { symbol: "x", size: 11, color: "#f6465d", line: { width: 2, color: "#f6465d" } },
      },
    ];
    const shapes = [];
    const annotations = [];
    const pos = S.positions.find((p) => p.symbol === S.symbol);
    // A position's lines are drawn across the chart when they are near the prices shown;
    // a far one (a cross position's liquidation price, say) is only named at the edge, so
    // the price action is not squeezed into a strip.
    const ys = [...S.series.mark[1], ...S.series.index[1], ...S.series.last[1]];
    const lo = ys.length ? Math.min(...ys) : NaN;
    const hi = ys.length ? Math.max(...ys) : NaN;
    const near = (y) => !ys.length || Math.abs(y - (lo + hi) / 2) <= (hi - lo) / 2 + 0.06 * hi;
    const level = (value, label, color, dash) => {
      const y = num(value);
      if (near(y)) {
        shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y,
          line: { color, width: 1, dash } });
        annotations.push({ xref: "paper", x: 0, y, xanchor: "left", yanchor: "bottom",
          text: `${label} ${value}`, showarrow: false, font: { color, size: 10 } });
      } else {
        annotations.push({ xref: "paper", yref: "paper", x: 0, y: y > hi ? 1 : 0,
          xanchor: "left", yanchor: y > hi ? "top" : "bottom", showarrow: false,
          text: `${label} ${value} ${y > hi ? "↑" : "↓"}`, font: { color, size: 10 } });
      }
    };
    if (pos && !isZero(pos.liquidationPrice)) level(pos.liquidationPrice, "liq", "#f6465d", "dash");
    if (pos && !isZero(pos.entryPrice)) level(pos.entryPrice, "entry", "#0ecb81", "dot");
    Plotly.react("chart", traces, { ...CHART_LAYOUT, shapes, annotations },
      { displayModeBar: false, responsive: true });
    $("chart").dataset.points = String(S.series.mark[0].length);
  }

  async function seedChart() {
    const sym = S.symbol;
    const rows = async (path, params) => {
      try { return await pub(path, params); } catch (e) { return []; }
    };
    const [index, mark, last] = await Promise.all([
      rows("/fapi/v1/indexPriceKlines", { pair: sym, interval: "1m", limit: 120 }),
      rows("/fapi/v1/markPriceKlines", { symbol: sym, interval: "1m", limit: 120 }),
      rows("/fapi/v1/klines", { symbol: sym, interval: "1m", limit: 120 }),
    ]);
    if (sym !== S.symbol) return;
    for (const [name, data] of [["index", index], ["mark", mark], ["last", last]]) {
      const [xs, ys] = S.series[name];
      if (xs.length) continue; // live data came first
      for (const k of data) {
        if (!isZero(k[4])) { xs.push(k[0]); ys.push(num(k[4])); }
      }
    }
    S.chartDirty = true;
  }

  // ---- market data ---------------------------------------------------------------------------
  function renderBook(bids, asks) {
    const asksTop = asks.slice(0, BOOK_LEVELS);
    const bidsTop = bids.slice(0, BOOK_LEVELS);
    const cum = (levels) => {
      let total = 0;
      return levels.map(([p, q]) => { total += num(q); return [p, q, total]; });
    };
    const a = cum(asksTop);
    const b = cum(bidsTop);
    const maxTotal = Math.max(1e-12, a.length ? a[a.length - 1][2] : 0,
      b.length ? b[b.length - 1][2] : 0);
    const dp = decimalsOf((S.markets[S.symbol] || {}).step || "0.001");
    const row = (cls, [p, q, total]) => {
      const div = el("div", `lvl ${cls}`);
      div.dataset.price = p;
      const bar = el("div", "bar");
      bar.style.width = `${(100 * total) / maxTotal}%`;
      div.append(bar, el("span", "", p), el("span", "", q), el("span", "", total.toFixed(dp)));
      return div;
    };
    $("book-asks").replaceChildren(...a.slice().reverse().map((l) => row("ask", l)));
    $("book-bids").replaceChildren(...b.map((l) => row("bid", l)));
    if (a.length && b.length) {
      const spread = num(a[0][0]) - num(b[0][0]);
      const tickDp = decimalsOf((S.markets[S.symbol] || {}).tick || "0.1");
      $("book-spread").textContent = `spread ${spread.toFixed(tickDp)}`;
    }
    $("book").dataset.levels = String(a.length + b.length);
  }

  function onDepth(d) {
    S.lastDepthMs = Date.now();
    renderBook(d.b || d.bids || [], d.a || d.asks || []);
  }

  function addTrade(price, qty, timeMs, buyerMaker) {
    const tape = $("tape");
    const row = el("div", `trade ${buyerMaker ? "sell" : "buy"}`);
    row.append(el("span", "", price), el("span", "", qty), el("span", "muted", hms(timeMs)));
    tape.prepend(row);
    while (tape.children.length > TAPE_ROWS) tape.lastChild.remove();
  }

  function onAggTrade(d) {
    S.lastTradeMs = Date.now();
    addTrade(d.p, d.q, d.T, d.m);
    $("last").textContent = d.p;
    pushPoint("last", d.T, num(d.p));
  }

  function onMark(d) {
    S.lastMarkMs = Date.now();
    $("mark").textContent = d.p;
    $("index").textContent = d.i;
    $("book-mid").textContent = d.p;
    if (d.r !== undefined) $("funding-rate").textContent = `${(num(d.r) * 100).toFixed(4)}%`;
    if (d.T) S.nextFundingMs = d.T;
    pushPoint("mark", d.E, num(d.p));
    pushPoint("index", d.E, num(d.i));
  }

  function addLiquidation(l) {
    // One liquidation may come twice: as a forceOrder (everyone's) and as the user stream's
    // LIQUIDATION order update (ours, one per fill, with cumulative quantity and average).
    const same = S.liqs.find((x) => (l.orderId !== undefined && x.orderId === l.orderId) ||
      (x.symbol === l.symbol && x.side === l.side && x.you !== l.you &&
        Math.abs(x.time - l.time) < 2000));
    if (same) {
      if (l.you) {
        same.you = true;
        same.orderId = l.orderId;
        same.qty = l.qty;
        same.price = l.price;
      }
    } else {
      S.liqs.push(l);
      if (S.liqs.length > LIQ_ROWS) S.liqs.shift();
    }
    renderLiquidations();
    S.chartDirty = true;
  }

  function renderLiquidations() {
    const feed = $("liquidations");
    if (!S.liqs.length) return;
    feed.replaceChildren(...S.liqs.slice().reverse().map((l) => {
      const row = el("div", "liq");
      row.dataset.symbol = l.symbol;
      row.append(
        el("span", "muted", hms(l.time)),
        el("span", "", l.symbol),
        el("span", l.side === "SELL" ? "sell-t" : "buy-t", `${l.side} ${l.qty} @ ${l.price}`),
        el("span", "you", l.you ? "YOU" : ""),
      );
      return row;
    }));
  }

  function onForceOrder(d) {
    const o = d.o || {};
    addLiquidation({
      time: o.T || d.E, symbol: o.s, side: o.S, qty: o.z && !isZero(o.z) ? o.z : o.q,
      price: o.ap && !isZero(o.ap) ? o.ap : o.p, you: false,
    });
  }

  function connectMarket() {
    const gen = ++S.marketGen;
    if (S.marketWs) S.marketWs.close();
    const sym = S.symbol.toLowerCase();
    const streams = [`${sym}@depth20@100ms`, `${sym}@aggTrade`, `${sym}@markPrice@1s`];
    for (const s of Object.keys(S.markets)) streams.push(`${s.toLowerCase()}@forceOrder`);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/stream?streams=${streams.join("/")}`);
    S.marketWs = ws;
    ws.onopen = () => $("conn-market").classList.add("on");
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      const d = msg.data || msg;
      const stream = msg.stream || "";
      if (d.e === "forceOrder") onForceOrder(d);
      else if (d.s && d.s !== S.symbol) return;
      else if (d.e === "depthUpdate" || stream.includes("@depth")) onDepth(d);
      else if (d.e === "aggTrade") onAggTrade(d);
      else if (d.e === "markPriceUpdate") onMark(d);
    };
    ws.onclose = () => {
      $("conn-market").classList.remove("on");
      if (gen === S.marketGen) setTimeout(() => gen === S.marketGen && connectMarket(), 1500);
    };
  }

  // REST stand-ins while a stream is silent (a stream that is late or not yet up).
  async function marketFallback() {
    const sym = S.symbol;
    const stale = (t) => Date.now() - t > 3000;
    try {
      if (stale(S.lastDepthMs)) {
        const d = await pub("/fapi/v1/depth", { symbol: sym, limit: 20 });
        if (sym === S.symbol && stale(S.lastDepthMs)) renderBook(d.bids, d.asks);
      }
      if (stale(S.lastMarkMs)) {
        const p = await pub("/fapi/v1/premiumIndex", { symbol: sym });
        if (sym === S.symbol && stale(S.lastMarkMs)) {
          onMark({ p: p.markPrice, i: p.indexPrice, r: p.lastFundingRate,
            T: p.nextFundingTime, E: p.time || now() });
          S.lastMarkMs = 0; // still stale: poll again next time
        }
      }
      if (stale(S.lastTradeMs) && !$("tape").children.length) {
        const trades = await pub("/fapi/v1/aggTrades", { symbol: sym, limit: 30 });
        for (const t of trades) addTrade(t.p, t.q, t.T, t.m);
      }
    } catch (e) { /* the streams will do */ }
  }

  async function refreshFunding() {
    try {
      const p = await pub("/fapi/v1/premiumIndex", { symbol: S.symbol });
      S.nextFundingMs = p.nextFundingTime;
      $("funding-rate").textContent = `${(num(p.lastFundingRate) * 100).toFixed(4)}%`;
    } catch (e) { /* shown when the stream brings it */ }
  }

  // ---- account -------------------------------------------------------------------------------
  async function refreshPositions() {
    const rows = await signed("GET", "/fapi/v3/positionRisk", {});
    S.positions = rows.filter((r) => !isZero(r.positionAmt));
    renderPositions();
    S.chartDirty = true;
  }

  async function refreshAccount() {
    const a = await signed("GET", "/fapi/v3/account", {});
    S.account = a;
    $("wallet").textContent = a.totalWalletBalance ?? "—";
    $("margin-balance").textContent = a.totalMarginBalance ?? "—";
    $("available").textContent = a.availableBalance ?? "—";
  }

  function marginRatio(p) {
    // Binance: maintenance margin / margin balance (the position's for isolated, the
    // account's for cross).
    const isolated = !isZero(p.isolatedWallet);
    if (isolated) {
      const balance = num(p.isolatedWallet) + num(p.unRealizedProfit);
      return balance > 0 ? (100 * num(p.maintMargin)) / balance : Infinity;
    }
    const a = S.account;
    if (!a) return NaN;
    const balance = num(a.totalMarginBalance);
    return balance > 0 ? (100 * num(a.totalMaintMargin)) / balance : Infinity;
  }

  function renderPositions() {
    const body = $("positions").tBodies[0];
    body.replaceChildren(...S.positions.map((p) => {
      const tr = el("tr");
      tr.dataset.symbol = p.symbol;
      const isolated = !isZero(p.isolatedWallet);
      const long = num(p.positionAmt) > 0;
      const lev = S.leverage[p.symbol] ? ` ${S.leverage[p.symbol]}x` : "";
      const ratio = marginRatio(p);
      const pnl = num(p.unRealizedProfit);
      const adl = el("td", "adl");
      const lights = Math.max(4, Number(p.adl) || 0);
      for (let i = 1; i <= lights; i++) adl.append(el("i", i <= (Number(p.adl) || 0) ? "lit" : ""));
      adl.title = `ADL quantile ${p.adl}`;
      const close = el("button", "", "Close");
      close.type = "button";
      close.onclick = () => closePosition(p);
      const cells = [
        el("td", "sym", `${p.symbol} ${isolated ? "Isolated" : "Cross"}${lev}`),
        el("td", `size ${long ? "buy-t" : "sell-t"}`, p.positionAmt),
        el("td", "entry", p.entryPrice),
        el("td", "mark", p.markPrice),
        el("td", "liq", isZero(p.liquidationPrice) ? "—" : p.liquidationPrice),
        el("td", "margin", isolated ? p.isolatedWallet : p.initialMargin),
        el("td", "ratio", Number.isFinite(ratio) ? `${ratio.toFixed(2)}%` : "—"),
        el("td", `pnl ${pnl >= 0 ? "buy-t" : "sell-t"}`, p.unRealizedProfit),
        adl,
      ];
      cells[4].dataset.value = p.liquidationPrice;
      const last = el("td");
      last.append(close);
      tr.append(...cells, last);
      return tr;
    }));
    $("positions-empty").hidden = S.positions.length > 0;
  }

  async function refreshOrders() {
    const sym = S.symbol;
    const [plain, algo] = await Promise.all([
      signed("GET", "/fapi/v1/openOrders", { symbol: sym }),
      signed("GET", "/fapi/v1/openAlgoOrders", { symbol: sym }).catch(() => []),
    ]);
    const rows = [
      ...plain.map((o) => ({
        kind: "order", id: o.orderId, time: o.time, symbol: o.symbol, type: o.type, side: o.side,
        price: o.price, trigger: isZero(o.stopPrice) ? "" : o.stopPrice, qty: o.origQty,
        filled: o.executedQty, flags: [o.reduceOnly && "reduce-only",
          o.timeInForce === "GTX" && "post-only"].filter(Boolean).join(" "),
      })),
      ...algo.map((o) => ({
        kind: "algo", id: o.algoId, time: o.createTime, symbol: o.symbol, type: o.orderType,
        side: o.side, price: isZero(o.price) ? "" : o.price, trigger: o.triggerPrice,
        qty: o.closePosition ? "close" : o.quantity, filled: "",
        flags: [o.closePosition && "close-position", o.reduceOnly && "reduce-only",
          o.workingType].filter(Boolean).join(" "),
      })),
    ].sort((a, b) => b.time - a.time);
    const body = $("orders").tBodies[0];
    body.replaceChildren(...rows.map((o) => {
      const tr = el("tr");
      tr.dataset.id = `${o.kind}-${o.id}`;
      const cancel = el("button", "cancel", "Cancel");
      cancel.type = "button";
      cancel.onclick = () => cancelOrder(o);
      const last = el("td");
      last.append(cancel);
      tr.append(
        el("td", "", hms(o.time)), el("td", "", o.symbol), el("td", "", o.type),
        el("td", o.side === "BUY" ? "buy-t" : "sell-t", o.side), el("td", "", o.price),
        el("td", "", o.trigger), el("td", "", o.qty), el("td", "", o.filled),
        el("td", "muted", o.flags), last,
      );
      return tr;
    }));
    $("orders-empty").hidden = rows.length > 0;
  }

  async function cancelOrder(o) {
    try {
      if (o.kind === "algo") {
        await signed("DELETE", "/fapi/v1/algoOrder", { symbol: o.symbol, algoId: o.id });
      } else {
        await signed("DELETE", "/fapi/v1/order", { symbol: o.symbol, orderId: o.id });
      }
      log(`canceled ${o.type} ${o.side} ${o.symbol}`);
    } catch (e) { log(`cancel: ${e.message}`, true); }
    refreshSoon();
  }

  async function closePosition(p) {
    const amt = p.positionAmt.replace(/^-/, "");
    try {
      const o = await signed("POST", "/fapi/v1/order", {
        symbol: p.symbol, side: num(p.positionAmt) > 0 ? "SELL" : "BUY", type: "MARKET",
        quantity: amt, reduceOnly: "true", newClientOrderId: clientId(),
        newOrderRespType: "RESULT",
      });
      log(`closed ${p.symbol}: ${o.status} ${o.executedQty} @ ${o.avgPrice}`);
    } catch (e) { log(`close: ${e.message}`, true); }
    refreshSoon();
  }

  const refreshSoon = debounce(() => { refreshAll(); schedulePreview(); }, 150);

  async function refreshAll() {
    if (!S.hmacKey) return;
    const jobs = [refreshAccount(), refreshPositions(), refreshOrders()];
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) console.warn("refresh:", failed.reason);
  }

  // ---- user data stream ----------------------------------------------------------------------
  async function connectUser() {
    if (!S.apiKey) return;
    try {
      const r = await parse(await fetch("/fapi/v1/listenKey", {
        method: "POST",
        headers: { "X-MBX-APIKEY": S.apiKey, "Content-Type": "application/x-www-form-urlencoded" },
      }));
      S.listenKey = r.listenKey;
    } catch (e) {
      log(`listenKey: ${e.message} (polling instead)`, true);
      setTimeout(connectUser, 5000);
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws/${S.listenKey}`);
    S.userWs = ws;
    ws.onopen = () => $("conn-user").classList.add("on");
    ws.onmessage = (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (d.data) d = d.data;
      if (d.e === "ORDER_TRADE_UPDATE") {
        const o = d.o || {};
        if (o.o === "LIQUIDATION" || String(o.c || "").startsWith("autoclose-")) {
          if (o.x === "TRADE" || o.X === "FILLED") {
            addLiquidation({ time: o.T || d.E, symbol: o.s, side: o.S, qty: o.z || o.l,
              price: !isZero(o.ap) ? o.ap : o.L, you: true, orderId: o.i });
          }
        }
        refreshSoon();
      } else if (d.e === "ACCOUNT_UPDATE" || d.e === "ALGO_UPDATE" || d.e === "MARGIN_CALL") {
        if (d.e === "MARGIN_CALL") log("MARGIN CALL", true);
        refreshSoon();
      } else if (d.e === "listenKeyExpired") {
        ws.close();
      }
    };
    ws.onclose = () => {
      $("conn-user").classList.remove("on");
      if (S.userWs === ws) setTimeout(connectUser, 2000);
    };
  }

  async function keepAlive() {
    if (!S.apiKey || !S.listenKey) return;
    try {
      await fetch("/fapi/v1/listenKey", { method: "PUT", headers: { "X-MBX-APIKEY": S.apiKey } });
    } catch (e) { /* the next one */ }
  }

  // ---- the order ticket ----------------------------------------------------------------------
  function clientId() {
    const bytes = crypto.getRandomValues(new Uint8Array(10));
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setSide(side) {
    S.side = side;
    $("side-buy").classList.toggle("active", side === "BUY");
    $("side-sell").classList.toggle("active", side === "SELL");
    const submit = $("submit");
    submit.className = side === "BUY" ? "buy" : "sell";
    submit.textContent = side === "BUY" ? "Buy / Long" : "Sell / Short";
    schedulePreview();
  }

  function showLeverage() {
    $("leverage-value").textContent = `${$("leverage").value}x`;
  }

  function ticket() {
    return {
      symbol: S.symbol,
      side: S.side,
      type: $("type").value,
      quantity: $("qty").value.trim(),
      price: $("price").value.trim(),
      leverage: parseInt($("leverage").value, 10),
      marginType: $("margin-mode").value,
      stopLoss: $("sl").value.trim(),
      takeProfit: $("tp").value.trim(),
    };
  }

  function clearPreview(text) {
    for (const id of ["preview-entry", "preview-size", "preview-cost", "preview-fee"]) {
      $(id).textContent = "—";
    }
    const liq = $("preview-liq");
    liq.textContent = text || "—";
    liq.dataset.value = "";
  }

  async function updatePreview() {
    const t = ticket();
    $("price").disabled = t.type === "MARKET";
    const seq = ++S.previewSeq;
    if (!S.hmacKey || !t.quantity || (t.type === "LIMIT" && !t.price)) {
      clearPreview();
      return;
    }
    try {
      const p = await signed("GET", "/dashboard/preview", {
        symbol: t.symbol, side: t.side, type: t.type, quantity: t.quantity,
        price: t.type === "LIMIT" ? t.price : undefined, leverage: t.leverage,
        marginType: t.marginType,
      });
      if (seq !== S.previewSeq) return; // a newer ticket is on its way
      const liq = $("preview-liq");
      liq.textContent = isZero(p.liquidationPrice) ? "—" : p.liquidationPrice;
      liq.dataset.value = p.liquidationPrice;
      $("preview-entry").textContent = isZero(p.entryPrice) ? "—" : p.entryPrice;
      $("preview-size").textContent = `${p.positionAmt} (${p.marginType.toLowerCase()} ${p.leverage}x)`;
      $("preview-cost").textContent = p.orderCost;
      $("preview-fee").textContent = p.fee;
      $("preview").dataset.ready = "1";
    } catch (e) {
      if (seq === S.previewSeq) clearPreview(`(${e.code})`);
    }
  }

  const schedulePreview = debounce(updatePreview, PREVIEW_DEBOUNCE_MS);

  async function submitTicket(ev) {
    ev.preventDefault();
    const t = ticket();
    const button = $("submit");
    button.disabled = true;
    setMsg("ticket-msg", "sending…");
    try {
      if (t.marginType !== S.marginType[t.symbol]) {
        try {
          await signed("POST", "/fapi/v1/marginType", { symbol: t.symbol, marginType: t.marginType });
        } catch (e) {
          if (e.code !== -4046) throw e; // -4046: already in that mode
        }
        S.marginType[t.symbol] = t.marginType;
      }
      if (t.leverage !== S.leverage[t.symbol]) {
        const r = await signed("POST", "/fapi/v1/leverage", { symbol: t.symbol, leverage: t.leverage });
        S.leverage[t.symbol] = parseInt(r.leverage, 10);
      }
      const params = {
        symbol: t.symbol, side: t.side, type: t.type, quantity: t.quantity,
        newClientOrderId: clientId(), newOrderRespType: "RESULT",
      };
      if (t.type === "LIMIT") {
        params.price = t.price;
        params.timeInForce = "GTC";
      }
      const o = await signed("POST", "/fapi/v1/order", params);
      let text = `${o.side} ${o.origQty} ${o.symbol} ${o.type}: ${o.status}`;
      if (!isZero(o.executedQty)) text += `, filled ${o.executedQty} @ ${o.avgPrice}`;
      // Stop-loss and take-profit at entry: conditional orders that close the position,
      // watching the mark (what Binance's own ticket places, via POST /fapi/v1/algoOrder).
      const exitSide = t.side === "BUY" ? "SELL" : "BUY";
      for (const [type, trigger] of [["STOP_MARKET", t.stopLoss], ["TAKE_PROFIT_MARKET", t.takeProfit]]) {
        if (!trigger) continue;
        try {
          await signed("POST", "/fapi/v1/algoOrder", {
            algoType: "CONDITIONAL", symbol: t.symbol, side: exitSide, type,
            triggerPrice: trigger, closePosition: "true", workingType: "MARK_PRICE",
            clientAlgoId: clientId(), newOrderRespType: "RESULT",
          });
          text += `; ${type === "STOP_MARKET" ? "stop-loss" : "take-profit"} at ${trigger}`;
        } catch (e) {
          text += `; ${type} refused: ${e.message}`;
        }
      }
      setMsg("ticket-msg", text, true);
      log(text);
    } catch (e) {
      setMsg("ticket-msg", e.message, false);
      log(`order: ${e.message}`, true);
    } finally {
      button.disabled = false;
      refreshSoon();
    }
  }

  // ---- admin ---------------------------------------------------------------------------------
  async function refreshStatus() {
    if (!S.admin) return;
    try {
      const s = await admin("GET", "/dashboard/status");
      $("insurance").textContent = s.insuranceFund;
      const d = s.driver || {};
      $("scenario").textContent = d.scenario || d.name || "";
      const bits = [];
      if (d.paused !== undefined) bits.push(d.paused ? "paused" : "running");
      if (d.speed !== undefined) {
        bits.push(`${d.speed}x`);
        if (!S.speedShown) $("speed").value = String(d.speed); // once: the user may be typing
        S.speedShown = true;
      }
      $("admin-state").textContent = bits.join(" · ");
    } catch (e) { /* shown as stale */ }
  }

  async function adminAction(label, fn) {
    try {
      const r = await fn();
      const detail = r && typeof r === "object" ? " " + JSON.stringify(r).slice(0, 90) : "";
      setMsg("admin-msg", `${label}: ok${detail}`, true);
      log(`${label}: ok`);
    } catch (e) {
      setMsg("admin-msg", `${label}: ${e.message}`, false);
    }
    refreshStatus();
  }

  function wireAdmin() {
    $("btn-pause").onclick = () => adminAction("pause", () => admin("POST", "/admin/pause"));
    $("btn-resume").onclick = () => adminAction("resume", () => admin("POST", "/admin/resume"));
    $("btn-speed").onclick = () => adminAction("speed",
      () => admin("POST", "/admin/speed", null, { speed: $("speed").value.trim() }));
    $("btn-shock").onclick = () => adminAction("shock", () => admin("POST", "/admin/shock", {
      kind: $("shock-kind").value,
      percent: $("shock-percent").value.trim(),
      minutes: $("shock-minutes").value.trim(),
    }));
  }

  // ---- wiring --------------------------------------------------------------------------------
  function wireTicket() {
    $("side-buy").onclick = () => setSide("BUY");
    $("side-sell").onclick = () => setSide("SELL");
    $("leverage").addEventListener("input", () => { showLeverage(); schedulePreview(); });
    for (const id of ["type", "margin-mode", "qty", "price"]) {
      $(id).addEventListener("input", schedulePreview);
      $(id).addEventListener("change", schedulePreview);
    }
    $("ticket").addEventListener("submit", submitTicket);
    // a click on a book level puts its price in the ticket
    $("book").addEventListener("click", (ev) => {
      const lvl = ev.target.closest(".lvl");
      if (!lvl) return;
      $("price").value = lvl.dataset.price;
      $("type").value = "LIMIT";
      schedulePreview();
    });
    $("symbol").addEventListener("change", () => switchSymbol($("symbol").value));
  }

  function switchSymbol(sym) {
    S.symbol = sym;
    S.series = { index: [[], []], mark: [[], []], last: [[], []] };
    S.lastDepthMs = S.lastMarkMs = S.lastTradeMs = 0;
    $("tape").textContent = "";
    $("book-asks").textContent = "";
    $("book-bids").textContent = "";
    connectMarket();
    seedChart();
    refreshFunding();
    loadSymbolSettings();
    refreshSoon();
  }

  async function main() {
    wireTicket();
    wireAdmin();
    setSide("BUY");
    showLeverage();
    try {
      await loadMarkets();
    } catch (e) {
      showBanner(`exchangeInfo failed: ${e.message}`);
      return;
    }
    try {
      await loadKey();
    } catch (e) {
      showBanner(`demo key: ${e.message}`);
    }
    connectMarket();
    seedChart();
    refreshFunding();
    refreshStatus();
    await loadSymbolSettings();
    await refreshAll();
    connectUser();
    setInterval(refreshAll, POLL_MS);
    setInterval(refreshStatus, POLL_MS);
    setInterval(marketFallback, POLL_MS);
    setInterval(updatePreview, 3 * POLL_MS); // the book moves: keep the figure current
    setInterval(refreshFunding, 60000);
    setInterval(keepAlive, 20 * 60 * 1000);
    setInterval(drawChart, 500);
    setInterval(() => {
      if (S.nextFundingMs) $("funding-countdown").textContent = countdown(S.nextFundingMs - now());
    }, 1000);
    document.body.dataset.ready = "1";
  }

  main();
})();
