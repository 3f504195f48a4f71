// The dashboard (GET /): a plain ES module, no build step, nothing fetched from elsewhere.
//
// Everything shown comes from the API, a page at a time: counts from the state events of
// /updates (or /health and /stats without them) and /stats, the age chart from /stats/ages, the
// table from /data?limit=50 (next pages by its Link header, previous ones from a stack of `after`
// values), rejected files from /rejected. The filters live in the page's URL under the API's own
// names, so back, forward, reload and a shared link show the same view. GET /updates (Server-Sent
// Events) says when the data changed: the page then loads what it shows again, keeping its place.
// All loads run one at a time, in order (see `enqueue`).

const LIMIT = 50;
const FILTERS = ["is_image_exists", "min_age", "max_age"];
const MIN_BAR = 6; // px: narrower bars are grouped into bands of years
const PROBE_MS = 1000; // how often an unreachable service is asked again
const FALLBACK_MS = 5000; // without live updates, how often the page looks again
const START_MS = 1000; // how long the first load waits for the stream's first state

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();
const oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

const state = {
  filters: {}, // the filters shown, as the URL names them
  requested: null, // the query of the filters last asked for (shown, or refused with a 400)
  after: null, // the table's page: the records after this user_id (null: the first page)
  previous: [], // the `after` of each page before the current one
  next: null, // the `after` of the next page, null on the last
  count: null, // users in the selection
  rejectedAfter: null,
  rejectedPrevious: [],
  rejectedNext: null,
  ages: [],
  changedAt: null,
  events: null, // the EventSource
  version: null, // the index's version the selection shown was loaded at (from state events)
  status: null, // the service's status at the last state event
  initial: {}, // the filters of the URL the page was opened at
  started: false, // the first load has begun
  startTimer: null, // begins it without a state event, should none come soon
  lost: false, // the service could not be reached
  fallback: null, // the timer that looks again while there are no live updates
};

// Loads, one at a time and in order: a load never overtakes another, so an older answer can
// never replace a newer one on the page.

let chain = Promise.resolve();

function enqueue(task) {
  const run = chain.then(task).catch(report);
  chain = run;
  return run;
}

const EVERYTHING = { totals: true, selection: true, rejected: true };
let refreshQueued = false;
let wanted = {};

/**
 * Load again what the page shows (something changed), keeping its place: the ``parts`` named
 * (totals, selection, rejected; all of them by default). Calls made before it runs join it.
 */
function refreshSoon(parts = EVERYTHING) {
  for (const [part, yes] of Object.entries(parts)) if (yes) wanted[part] = true;
  if (refreshQueued) return chain;
  refreshQueued = true;
  return enqueue(async () => {
    refreshQueued = false;
    const now = wanted;
    wanted = {};
    await Promise.all([
      now.totals ? loadTotals() : null,
      now.selection ? loadSelection(state.filters, state.after) : null,
      now.rejected ? loadRejected() : null,
    ]);
  });
}

/**
 * The first load: the selection of the page's URL, its first page, the rejected files; the totals
 * too unless a state event brought them. Marks the page ready once shown (what bench/page.py times).
 */
function loadFirst(withTotals) {
  if (state.started) return;
  state.started = true;
  clearTimeout(state.startTimer);
  enqueue(() =>
    Promise.all([withTotals ? loadTotals() : null, loadSelection(state.initial, null, []), loadRejected(null, [])]),
  ).then(() => {
    performance.mark("userdata:ready");
    document.body.dataset.ready = "1";
  });
}

// Requests

class Unreachable extends Error {}

/** {status, body, headers} of a request; throws Unreachable when no answer came at all. */
async function request(url, init = {}) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" }, ...init });
  } catch {
    lose();
    throw new Unreachable(url);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): the status says enough
  }
  return { status: response.status, body, headers: response.headers };
}

function problem(answer) {
  return (answer.body && answer.body.error) || `HTTP ${answer.status}`;
}

function report(error) {
  if (!(error instanceof Unreachable)) console.error(error);
}

/** The query string of ``filters`` (in the API's order) and ``extra``. */
function query(filters, extra = {}) {
  const q = new URLSearchParams();
  for (const name of FILTERS) if (filters[name] !== undefined) q.set(name, filters[name]);
  for (const [name, value] of Object.entries(extra)) if (value !== null && value !== undefined) q.set(name, value);
  return q.toString();
}

function withQuery(path, q) {
  return q ? `${path}?${q}` : path;
}

/** The `after` of a Link: <...>; rel="next" header, or null. */
function nextAfter(headers) {
  const link = headers.get("Link");
  const match = link && link.match(/<([^>]*)>\s*;\s*rel="?next"?/);
  return match ? new URL(match[1], location.href).searchParams.get("after") : null;
}

// Reachability: a fetch that gets no answer, or live updates that drop while /health does not
// answer either, show the banner; the page then asks every second and, once the service
// answers, loads everything again and reconnects its live updates.

function lose() {
  if (state.lost) return;
  state.lost = true;
  $("banner").hidden = false;
  setLive("unreachable");
  probe();
}

async function probe() {
  while (state.lost) {
    await sleep(PROBE_MS);
    try {
      await fetch("/health", { cache: "no-store" });
    } catch {
      continue;
    }
    regain();
  }
}

/** The service answers again (``streaming``: the stream is open again). */
function regain(streaming = false) {
  if (!state.lost) return;
  state.lost = false;
  $("banner").hidden = true;
  // A stream (re)opened sends a state event at once, which loads everything again.
  if (streaming) return;
  if (!state.events || state.events.readyState !== EventSource.OPEN) connect();
  else refreshSoon();
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Live updates

function connect() {
  if (state.events) state.events.close();
  const events = (state.events = new EventSource("/updates"));
  events.addEventListener("open", () => {
    stopFallback();
    setLive("live");
    regain(true);
  });
  events.addEventListener("state", (event) => {
    let update;
    try {
      update = JSON.parse(event.data);
    } catch {
      return;
    }
    const counted = typeof update.users === "number" && typeof update.with_image === "number";
    showTotals({
      users: update.users,
      withImage: update.with_image,
      withoutImage: counted ? update.users - update.with_image : undefined,
      rejected: update.rejected,
      status: update.status,
      cause: update.cause,
      changedAt: update.changed_at,
    });
    // The selection is loaded again when the index changed, or when the first load ended (a
    // replica answers 503 until then, and a load may change nothing); the rejected files at
    // every event (they change without the index).
    const loaded = state.status === "starting" && update.status !== "starting";
    const changed = update.version !== state.version || loaded;
    state.version = update.version;
    state.status = update.status;
    if (!state.started) loadFirst(false);
    else refreshSoon({ selection: changed, rejected: true });
  });
  events.addEventListener("error", async () => {
    if (events !== state.events) return;
    // A service started again may count versions from where another left off: after any break,
    // the next state event loads the selection again.
    state.version = null;
    if (!state.started) loadFirst(true);
    setLive(events.readyState === EventSource.CLOSED ? "polling" : "reconnecting");
    try {
      await fetch("/health", { cache: "no-store" });
    } catch {
      lose();
      return;
    }
    // The service answers: the browser reconnects by itself, unless the stream was refused
    // (an HTTP error): then look again now and then, and try the stream again.
    if (events.readyState === EventSource.CLOSED) startFallback();
  });
}

function startFallback() {
  if (state.fallback) return;
  state.fallback = setInterval(() => {
    if (state.lost) return;
    refreshSoon();
    if (!state.events || state.events.readyState === EventSource.CLOSED) connect();
  }, FALLBACK_MS);
}

function stopFallback() {
  clearInterval(state.fallback);
  state.fallback = null;
}

const LIVE_TEXT = {
  live: "live",
  reconnecting: "reconnecting…",
  polling: `not live: looking every ${FALLBACK_MS / 1000} s`,
  unreachable: "unreachable",
};

function setLive(what) {
  const live = $("live");
  live.dataset.live = what;
  live.textContent = LIVE_TEXT[what] || what;
}

// At a glance

async function loadTotals() {
  const [health, withImage, withoutImage] = await Promise.all([
    request("/health"),
    request("/stats?is_image_exists=true"),
    request("/stats?is_image_exists=false"),
  ]);
  const h = health.body || {};
  showTotals({
    users: h.users,
    withImage: withImage.status === 200 ? withImage.body.count : undefined,
    withoutImage: withoutImage.status === 200 ? withoutImage.body.count : undefined,
    rejected: h.rejected_count,
    status: h.status || `HTTP ${health.status}`,
    cause: h.cause,
    changedAt: h.changed_at,
  });
}

function showCount(id, value) {
  const element = $(id);
  if (typeof value === "number") {
    element.textContent = numbers.format(value);
    element.dataset.value = String(value);
  } else if (value === undefined) {
    return; // not known from this answer: the last figure stays
  } else {
    element.textContent = "—";
    delete element.dataset.value;
  }
}

function showTotals(t) {
  showCount("users", t.users);
  showCount("with-image", t.withImage);
  showCount("without-image", t.withoutImage);
  showCount("rejected-count", t.rejected);
  const status = $("status");
  status.textContent = t.status || "unknown";
  status.dataset.status = t.status || "";
  $("cause").textContent = t.cause ? `: ${t.cause}` : "";
  if (t.changedAt !== undefined) {
    state.changedAt = t.changedAt;
    showChangedAt();
  }
}

function showChangedAt() {
  const element = $("changed-at");
  if (!state.changedAt) {
    element.textContent = "not since the service started";
    element.removeAttribute("datetime");
    return;
  }
  const when = new Date(state.changedAt);
  if (Number.isNaN(when.getTime())) {
    element.textContent = state.changedAt;
    return;
  }
  element.dateTime = when.toISOString();
  element.title = when.toString();
  element.textContent = `${when.toISOString().slice(0, 19).replace("T", " ")} UTC (${ago(when)})`;
}

function ago(when) {
  const seconds = Math.max(0, Math.round((Date.now() - when.getTime()) / 1000));
  if (seconds < 60) return seconds < 5 ? "just now" : `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  return hours < 48 ? `${hours} h ago` : `${Math.round(hours / 24)} days ago`;
}

// The selection: its figures, the chart and the table's page, loaded together

/**
 * Load the selection of ``filters`` at the page after ``after`` and show it. A 400 (a bad filter)
 * is shown beside the field at fault and leaves the page as it was; returns whether it was shown.
 * With ``fresh`` (new filters), the errors shown go once it is.
 */
async function loadSelection(filters, after, previous = state.previous, fresh = false) {
  const q = query(filters);
  const [stats, ages, page] = await Promise.all([
    request(withQuery("/stats", q)),
    request(withQuery("/stats/ages", q)),
    request(withQuery("/data", query(filters, { limit: LIMIT, after }))),
  ]);
  const bad = [stats, ages, page].find((answer) => answer.status === 400);
  if (bad) {
    showFieldError(problem(bad));
    return false;
  }
  if (page.status === 200 && page.body.length === 0 && after !== null && previous.length) {
    // The page emptied (its users went): show the one before it.
    const back = previous.slice(0, -1);
    return loadSelection(filters, previous[previous.length - 1], back, fresh);
  }
  if (fresh) clearErrors();
  state.filters = filters;
  state.after = after;
  state.previous = previous;
  if (stats.status === 200) {
    state.count = stats.body.count;
    showCount("selection-count", stats.body.count);
    const average = stats.body.average_age;
    const element = $("average-age");
    element.textContent = average === null ? "—" : oneDecimal.format(average);
    if (average !== null) {
      const unit = document.createElement("span");
      unit.className = "unit";
      unit.textContent = " years";
      element.append(unit);
    }
    element.dataset.value = average === null ? "" : String(average);
  } else {
    state.count = null;
    for (const id of ["selection-count", "average-age"]) {
      showCount(id, null);
      $(id).textContent = problem(stats);
    }
  }
  if (ages.status === 200) drawChart(ages.body.ages);
  else chartMessage(`The chart is not available: ${problem(ages)}`);
  if (page.status === 200) {
    state.next = nextAfter(page.headers);
    showUsers(page.body);
  } else {
    state.next = null;
    showUsers([], `The users are not available: ${problem(page)}`);
  }
  showDownloads(filters);
  return true;
}

// Filters and the URL

function filtersFromURL() {
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value !== null && value.trim() !== "") filters[name] = value.trim();
  }
  return filters;
}

const IMAGE_VALUES = { true: "true", 1: "true", yes: "true", false: "false", 0: "false", no: "false" };

function fillForm(filters) {
  const form = $("filters");
  const select = form.elements.is_image_exists;
  select.querySelectorAll("option[data-extra]").forEach((option) => option.remove());
  const image = filters.is_image_exists;
  if (image === undefined) select.value = "";
  else if (Object.hasOwn(IMAGE_VALUES, image.toLowerCase())) select.value = IMAGE_VALUES[image.toLowerCase()];
  else {
    // A value the API will refuse (from a typed URL): shown as it is, the API's error beside it.
    const option = new Option(image, image);
    option.dataset.extra = "1";
    select.add(option);
    select.value = image;
  }
  for (const name of ["min_age", "max_age"]) form.elements[name].value = filters[name] ?? "";
}

/** The form's filters, or null after showing why one cannot be sent. */
function readForm() {
  const form = $("filters");
  const filters = {};
  for (const name of FILTERS) {
    const field = form.elements[name];
    if (field.validity && field.validity.badInput) {
      clearErrors();
      showFieldError(`${name} must be a number`, name);
      return null;
    }
    const value = field.value.trim();
    if (value !== "") filters[name] = value;
  }
  return filters;
}

/** Show the selection of ``filters`` from its first page; with ``push``, as a new history entry. */
function apply(filters, { push = true } = {}) {
  state.requested = query(filters);
  return enqueue(async () => {
    const shown = await loadSelection(filters, null, [], true);
    if (shown && push) {
      const url = withQuery("/", query(filters));
      if (url !== location.pathname + location.search) history.pushState(null, "", url);
    }
  });
}

function showFieldError(message, field = null) {
  // The API's message names the parameter at fault: the first one it mentions.
  let at = field;
  if (!at) {
    let first = Infinity;
    for (const name of FILTERS) {
      const i = message.indexOf(name);
      if (i >= 0 && i < first) [first, at] = [i, name];
    }
  }
  const target = at ? $(`${at}-error`) : $("form-error");
  target.textContent = message;
  if (at) $("filters").elements[at].setAttribute("aria-invalid", "true");
}

function clearErrors() {
  for (const name of FILTERS) {
    $(`${name}-error`).textContent = "";
    $("filters").elements[name].removeAttribute("aria-invalid");
  }
  $("form-error").textContent = "";
}

function showDownloads(filters) {
  const q = query(filters);
  $("download-csv").href = `/data?${query(filters, { format: "csv" })}`;
  $("download-json").href = withQuery("/data", q);
}

// The chart: inline SVG, one bar per year of age, or per band of years where bars would be too
// narrow. Bars are buttons: hover or focus shows the count, click or Enter narrows the filters.

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function chartMessage(text) {
  state.ages = null;
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = text;
  $("chart").replaceChildren(p);
  $("chart").dataset.bars = "0";
}

/** Bars of ``ages`` (contiguous, youngest first) for a plot ``width`` px wide. */
export function bands(ages, width) {
  const span = ages[ages.length - 1].age - ages[0].age + 1;
  let size = 1;
  for (size of [1, 2, 5, 10, 20, 50]) if (width / Math.ceil(span / size) >= MIN_BAR) break;
  const bars = [];
  for (const { age, count } of ages) {
    const low = Math.floor(age / size) * size;
    const last = bars[bars.length - 1];
    if (last && last.low === low) last.count += count;
    else bars.push({ low, high: low + size - 1, count });
  }
  return { size, bars };
}

let focusedBar = 0;

function drawChart(ages) {
  state.ages = ages;
  const box = $("chart");
  if (!ages.length) {
    chartMessage("No users in this selection.");
    state.ages = ages;
    return;
  }
  const width = Math.max(260, Math.floor(box.clientWidth || 600));
  const height = 200;
  const pad = { left: 44, right: 8, top: 12, bottom: 28 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const { size, bars } = bands(ages, plotWidth);
  const tick = niceStep(Math.max(1, ...bars.map((bar) => bar.count)));
  const highest = Math.ceil(Math.max(1, ...bars.map((bar) => bar.count)) / tick) * tick;
  const step = plotWidth / bars.length;
  const gap = step > 4 ? 1 : 0;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "group",
    "aria-label": `Users by age${size > 1 ? ` in bands of ${size} years` : ""}: ${bars.length} bars`,
  });
  // Axes: counts at round steps, an age label every few bars.
  for (let value = 0; value <= highest; value += tick) {
    const y = pad.top + plotHeight - (value / highest) * plotHeight;
    chart.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y, y2: y }));
    const label = svg("text", { class: "axis", x: pad.left - 6, y: y + 4, "text-anchor": "end" });
    label.textContent = numbers.format(value);
    chart.append(label);
  }
  // Age labels at round ages, far enough apart to read.
  const every = [1, 2, 5, 10, 20, 50].find((n) => n * step >= 28) ?? 100;
  if (focusedBar >= bars.length) focusedBar = 0;
  bars.forEach((bar, i) => {
    const x = pad.left + i * step;
    const h = (bar.count / highest) * plotHeight;
    const name = bar.low === bar.high ? `Age ${bar.low}` : `Ages ${bar.low}–${bar.high}`;
    const text = `${name}: ${numbers.format(bar.count)} ${bar.count === 1 ? "user" : "users"}`;
    const group = svg("g", {
      class: "bar",
      role: "button",
      tabindex: i === focusedBar ? 0 : -1,
      "aria-label": text,
      "data-low": bar.low,
      "data-high": bar.high,
      "data-count": bar.count,
    });
    group.append(
      svg("rect", { class: "hit", x, y: pad.top, width: Math.max(step, 1), height: plotHeight }),
      svg("rect", {
        class: "fill",
        x: x + gap / 2,
        y: pad.top + plotHeight - h,
        width: Math.max(step - gap, 0.5),
        height: h,
      }),
    );
    group.addEventListener("pointerenter", () => showTip(group, text));
    group.addEventListener("pointerleave", hideTip);
    group.addEventListener("focus", () => {
      focusedBar = i;
      showTip(group, text);
    });
    group.addEventListener("blur", hideTip);
    group.addEventListener("click", () => narrowTo(bar));
    group.addEventListener("keydown", (event) => barKey(event, i, bar));
    chart.append(group);
    if ((bar.low / size) % every === 0) {
      const y = height - pad.bottom + 16;
      const label = svg("text", { class: "axis", x: x + step / 2, y, "text-anchor": "middle" });
      label.textContent = String(bar.low);
      chart.append(label);
    }
  });
  box.replaceChildren(chart);
  drawnWidth = Math.floor(box.clientWidth);
  box.dataset.bars = String(bars.length);
  box.dataset.band = String(size);
  box.dataset.width = String(width);
}

/** A round step for about 4 grid lines up to ``top``: 1, 2 or 5 times a power of ten. */
function niceStep(top) {
  const rough = top / 4;
  const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= rough) return Math.max(1, factor * power);
  return 10 * power;
}

function barKey(event, i, bar) {
  const bars = [...$("chart").querySelectorAll("g.bar")];
  const last = bars.length - 1;
  const moves = { ArrowRight: i + 1, ArrowUp: i + 1, ArrowLeft: i - 1, ArrowDown: i - 1, Home: 0, End: last };
  if (event.key in moves) {
    event.preventDefault();
    const to = Math.min(bars.length - 1, Math.max(0, moves[event.key]));
    bars[i].setAttribute("tabindex", "-1");
    bars[to].setAttribute("tabindex", "0");
    bars[to].focus();
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    narrowTo(bar);
  }
}

function narrowTo(bar) {
  hideTip();
  const filters = { ...state.filters, min_age: String(bar.low), max_age: String(bar.high) };
  fillForm(filters);
  apply(filters);
}

function showTip(target, text) {
  const tip = $("chart-tip");
  tip.textContent = text;
  tip.hidden = false;
  const panel = tip.offsetParent || document.body;
  const box = target.getBoundingClientRect();
  const base = panel.getBoundingClientRect();
  const left = box.left - base.left + box.width / 2 - tip.offsetWidth / 2;
  tip.style.left = `${Math.max(0, Math.min(left, base.width - tip.offsetWidth))}px`;
  tip.style.top = `${box.top - base.top - tip.offsetHeight - 6}px`;
}

function hideTip() {
  $("chart-tip").hidden = true;
}

let drawnWidth = 0;
new ResizeObserver(() => {
  const width = Math.floor($("chart").clientWidth);
  if (width !== drawnWidth && state.ages && state.ages.length) {
    drawnWidth = width;
    drawChart(state.ages);
  }
}).observe($("chart"));

// The table of the selection, a page of LIMIT at a time

/** Completed years on the UTC date of ``now`` of someone born at ``birthts`` (SPEC.md: a Feb 29
 * birthday counts from Mar 1 in other years). */
export function ageOn(birthts, now) {
  const born = new Date(birthts);
  const today = new Date(now);
  const before =
    today.getUTCMonth() < born.getUTCMonth() ||
    (today.getUTCMonth() === born.getUTCMonth() && today.getUTCDate() < born.getUTCDate());
  return today.getUTCFullYear() - born.getUTCFullYear() - (before ? 1 : 0);
}

function birthDate(birthts) {
  const iso = new Date(birthts).toISOString();
  return iso.slice(0, iso.indexOf("T"));
}

function cell(row, text, { tag = "td", className = "" } = {}) {
  const element = document.createElement(tag);
  if (tag === "th") element.scope = "row";
  if (className) element.className = className;
  element.textContent = text;
  row.append(element);
  return element;
}

function showUsers(records, message = "") {
  const now = Date.now();
  const rows = records.map((record) => {
    const row = document.createElement("tr");
    row.dataset.userId = record.user_id;
    cell(row, record.user_id, { tag: "th" });
    cell(row, record.first_name);
    cell(row, record.last_name);
    cell(row, birthDate(record.birthts), { className: "date" });
    cell(row, String(ageOn(record.birthts, now)), { className: "num age" });
    const image = cell(row, "", { className: "thumb" });
    if (record.img_path) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.width = img.height = 32;
      img.alt = "";
      img.src = `/images/${encodeURIComponent(record.user_id)}`;
      img.addEventListener("error", () => img.replaceWith("—"));
      image.append(img);
    } else {
      image.textContent = "—";
    }
    cell(row, record.img_path ?? "—", { className: "path" });
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    const only = cell(row, message || "No users in this selection.", { className: "empty" });
    only.colSpan = 7;
    rows.push(row);
  }
  $("users-body").replaceChildren(...rows);
  const first = state.previous.length * LIMIT + 1;
  const last = first + records.length - 1;
  const of = state.count === null ? "" : ` of ${numbers.format(state.count)}`;
  const where = records.length ? `rows ${numbers.format(first)}–${numbers.format(last)}${of}` : `none${of}`;
  $("users-caption").textContent = `Users in the selection: ${where}`;
  $("users-position").textContent = `Page ${numbers.format(state.previous.length + 1)}`;
  $("users-prev").disabled = state.after === null;
  $("users-next").disabled = state.next === null;
}

// Rejected files, a page of LIMIT at a time

async function loadRejected(after = state.rejectedAfter, previous = state.rejectedPrevious) {
  const q = new URLSearchParams(after === null ? { limit: LIMIT } : { limit: LIMIT, after });
  const answer = await request(`/rejected?${q}`);
  if (answer.status !== 200) {
    showRejected([], null, `Not available: ${problem(answer)}`);
    return;
  }
  const { rejected, count } = answer.body;
  if (!rejected.length && after !== null && previous.length) {
    return loadRejected(previous[previous.length - 1], previous.slice(0, -1));
  }
  state.rejectedAfter = after;
  state.rejectedPrevious = previous;
  state.rejectedNext = nextAfter(answer.headers);
  showCount("rejected-count", count);
  showRejected(rejected, count);
}

function showRejected(rejected, count, message = "") {
  const rows = rejected.map(({ key, reason }) => {
    const row = document.createElement("tr");
    cell(row, key, { tag: "th", className: "path" });
    cell(row, reason);
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    cell(row, message || "No rejected files.", { className: "empty" }).colSpan = 2;
    rows.push(row);
  }
  $("rejected-body").replaceChildren(...rows);
  const first = state.rejectedPrevious.length * LIMIT + 1;
  const of = count === null ? "" : ` of ${numbers.format(count)}`;
  $("rejected-caption").textContent = rejected.length
    ? `Rejected files: ${numbers.format(first)}–${numbers.format(first + rejected.length - 1)}${of}`
    : `Rejected files: none${of}`;
  $("rejected-position").textContent = `Page ${numbers.format(state.rejectedPrevious.length + 1)}`;
  $("rejected-prev").disabled = state.rejectedAfter === null;
  $("rejected-next").disabled = state.rejectedNext === null;
}

// Rescan

async function rescan() {
  const button = $("rescan");
  const out = $("rescan-report");
  button.disabled = true;
  out.textContent = "Rescanning…";
  try {
    const answer = await request("/data", { method: "POST" });
    if (answer.status !== 200) {
      out.textContent = `Rescan failed: ${problem(answer)}`;
      return;
    }
    const r = answer.body;
    out.textContent =
      `Rescan done in ${numbers.format(r.duration_ms)} ms: ${numbers.format(r.users)} users; ` +
      `${numbers.format(r.added)} added, ${numbers.format(r.updated)} updated, ` +
      `${numbers.format(r.removed)} removed, ${numbers.format(r.rejected)} rejected.`;
    for (const key of ["users", "added", "updated", "removed", "rejected", "duration_ms"]) {
      out.dataset[key] = String(r[key]);
    }
    refreshSoon();
  } catch (error) {
    out.textContent = "Rescan failed: the service is unreachable.";
    report(error);
  } finally {
    button.disabled = false;
  }
}

// Wiring

function wire() {
  const form = $("filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const filters = readForm();
    if (filters && query(filters) !== state.requested) apply(filters);
  });
  // The image filter applies at once; the ages on Enter or Apply (one history entry for a range).
  form.elements.is_image_exists.addEventListener("change", () => {
    const filters = readForm();
    if (filters && query(filters) !== state.requested) apply(filters);
  });
  $("clear").addEventListener("click", () => {
    fillForm({});
    apply({});
  });
  window.addEventListener("popstate", () => {
    const filters = filtersFromURL();
    fillForm(filters);
    apply(filters, { push: false });
  });
  $("users-next").addEventListener("click", () => {
    if (state.next === null) return;
    enqueue(() => loadSelection(state.filters, state.next, [...state.previous, state.after]));
  });
  $("users-prev").addEventListener("click", () => {
    if (state.after === null) return;
    const previous = state.previous.slice(0, -1);
    enqueue(() => loadSelection(state.filters, state.previous[state.previous.length - 1] ?? null, previous));
  });
  $("rejected-next").addEventListener("click", () => {
    if (state.rejectedNext === null) return;
    enqueue(() => loadRejected(state.rejectedNext, [...state.rejectedPrevious, state.rejectedAfter]));
  });
  $("rejected-prev").addEventListener("click", () => {
    if (state.rejectedAfter === null) return;
    const previous = state.rejectedPrevious.slice(0, -1);
    enqueue(() => loadRejected(state.rejectedPrevious[state.rejectedPrevious.length - 1] ?? null, previous));
  });
  $("rescan").addEventListener("click", rescan);
  setInterval(showChangedAt, 15000);
}

function start() {
  wire();
  state.initial = filtersFromURL();
  fillForm(state.initial);
  state.requested = query(state.initial);
  // The stream's first state event, sent at once, brings the totals and begins the first load;
  // without one soon (no stream), the page loads them itself.
  connect();
  state.startTimer = setTimeout(() => loadFirst(true), START_MS);
}

start();
