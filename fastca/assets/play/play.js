// fastca play: draws the frames the server streams and sends the user's edits.
// Frame: "FCA1", step u32, height u16, width u16, flags u32 (bit 0 paused, bit 1 RGBA), then per cell
// either gray (u8) and class (u8: 0..9, 10 undecided, 255 dead) (a digit model; colours: the article's
// palette, as fastca.viz) or premultiplied RGBA (u8 x 4) (the growing model, composited on white).
"use strict";
const PALETTE = [[128, 0, 0], [230, 25, 75], [70, 240, 240], [210, 245, 60], [250, 190, 190],
  [170, 110, 40], [170, 255, 195], [165, 163, 159], [0, 128, 128], [128, 128, 0], [0, 0, 0]];
const NAMES = ["maroon", "red", "cyan", "lime", "pale pink", "brown", "mint", "grey", "teal", "olive", "black"];
const DEAD = 255, UNDECIDED = 10;
const MNIST = 28;  // the side of an MNIST digit's square: the scale the model learned
const TOO_BIG = 34, TOO_SMALL = 8;  // cells: a drawing outside this is far from that scale
const DAMAGE_RADIUS = 7;
const PAUSED = 1, RGBA = 2;  // frame flags
const MODEL_KINDS = { "fastca-mnist": "digits", "distill-2020": "digits", "growing-gecko": "growing" };
const FIRST_TOOL = { digits: "draw", growing: "seed" };  // a tool shown for each kind of world
const canvas = document.getElementById("world");
const ctx = canvas.getContext("2d");
const guide = document.getElementById("guide");
const $ = (id) => document.getElementById(id);
const state = { kind: "digits", gray: null, label: null, rgba: null, width: 0, height: 0, step: 0, paused: false,
                frames: 0, fps: 0, image: null,
                received: [], errors: [], refused: null, connection: "connecting", sessions: 0, reconnects: 0,
                probeAt: null, probe: null, scale: null, counts: null, infos: [] };
window.fastca = state;  // for tests and the curious
const shown = () => state.label !== null || state.rgba !== null;  // a frame of this world is on screen

const textOn = (c) => (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 140 ? "#000" : "#fff");
const swatch = (d, cls = "sw") =>
  `<b class="${cls}" style="background: rgb(${PALETTE[d]}); color: ${textOn(PALETTE[d])}">${d < 10 ? d : "?"}</b>`;

const legend = $("legend");
PALETTE.forEach((c, d) => {
  const s = document.createElement("span");
  s.className = "chip absent";
  s.dataset.cls = d;
  s.innerHTML = `${swatch(d)}<span>${d < 10 ? NAMES[d] : "undecided"}</span><em></em>`;
  s.title = d < 10 ? `class ${d}: ${NAMES[d]}` : "undecided: every class channel negative";
  legend.appendChild(s);
});

// --- connection: "connecting" -> "starting" -> "live"; on a close, reconnect (a restarted server) ---------------
let ws = null, retryTimer = null, failures = 0;
const send = (msg) => { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); };

function showOverlay(text, { retry = false, reload = false } = {}) {
  $("overlay").hidden = !text;
  $("overlaytext").textContent = text || "";
  $("retry").hidden = !retry;
  $("reload").hidden = !reload;
}

function setConnection(kind, text) {
  state.connection = kind;
  $("status").textContent = text;
}

function connect() {
  clearTimeout(retryTimer);
  state.refused = null;
  const sock = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  sock.binaryType = "arraybuffer";
  ws = sock;
  sock.live = false;
  setConnection("connecting", "connecting to the server...");
  if (!shown()) showOverlay("connecting to the server...");
  sock.onopen = () => {
    if (sock !== ws) return;
    setConnection("starting", "starting the world (on a fresh server the first one takes a few seconds)...");
    if (!shown()) showOverlay("starting the world... (on a fresh server the first one takes a few seconds)");
  };
  sock.onmessage = (ev) => { if (sock === ws) onMessage(sock, ev); };
  sock.onclose = () => {
    if (sock !== ws) return;
    if (state.refused) {  // the server is full (or cannot run a world): the reason stays on screen
      setConnection("refused", "not started");
      $("error").textContent = `not started: ${state.refused}`;
      showOverlay(`not started: ${state.refused}`, { retry: true, reload: true });
      return;
    }
    failures = sock.live ? 1 : failures + 1;
    const wait = Math.min(5, failures);  // seconds: 1, 2, ... 5, forever (a restarted server is found again)
    const text = `disconnected from the server: reconnecting in ${wait} s (a restarted server starts a new world)`;
    setConnection("disconnected", text);
    $("error").textContent = "disconnected from the server";
    showOverlay(failures > 3 ? "the server does not answer: is `fastca play` still running? Reconnecting every 5 s, or"
                             : "disconnected from the server: reconnecting...", { reload: failures > 3 });
    retryTimer = setTimeout(connect, wait * 1000);
  };
}

function onMessage(sock, ev) {
  if (typeof ev.data !== "string") {
    if (!sock.live) {  // the first frame of this connection
      sock.live = true;
      failures = 0;
      if (state.sessions++ > 0) {
        state.reconnects++;
        info("reconnected: the server restarted, so this is a new world");
      }
      $("error").textContent = "";
      showOverlay(null);
      setConnection("live", "running");
      if (+$("speed").value !== 1) send({ type: "speed", steps_per_frame: +$("speed").value });
    }
    drawFrame(ev.data);
    send({ type: "ack" });
    return;
  }
  const msg = JSON.parse(ev.data);
  if (msg.type === "stats") {
    $("sps").textContent = msg.steps_per_s.toFixed(0);
    $("backend").textContent = `${msg.backend}, ${msg.model}`;
    if ($("model").value !== msg.model && document.activeElement !== $("model")) $("model").value = msg.model;
    setConnection("live", `running: ${msg.backend}, ${msg.model}`);
  } else if (msg.type === "error" || msg.type === "refused") {
    if (msg.type === "refused") {  // the server is full (or cannot run a world) and closes this session next
      state.refused = msg.message;
      $("error").textContent = `not started: ${msg.message}`;
    } else {
      state.errors.push(msg.message);
      $("error").textContent = msg.message;
    }
  } else if (msg.type === "digit") {
    $("error").textContent = "";
    info(`dropped a ${msg.label}`);
  } else if (msg.type === "info") {
    info(msg.message);
  }
}

function info(text, warn = false) {
  state.infos.push(text);
  $("note").textContent = text;
  $("note").className = warn ? "warn" : "";
}

// --- frames ------------------------------------------------------------------------------------------------------
let lastProbe = 0, lastCount = 0;
function drawFrame(buf) {
  const view = new DataView(buf);
  const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic !== "FCA1") return;
  const step = view.getUint32(4, true), h = view.getUint16(8, true), w = view.getUint16(10, true);
  const flags = view.getUint32(12, true);
  setKind(flags & RGBA ? "growing" : "digits");
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w; canvas.height = h; state.image = null; state.probeAt = null; state.scale = null;
    if ([...$("size").options].some((o) => o.value === String(h))) $("size").value = String(h);
    Object.assign(state, { width: w, height: h });
    fit();
  }
  if (!state.image) state.image = ctx.createImageData(w, h);
  if (flags & RGBA) {
    const rgba = new Uint8Array(buf, 16, h * w * 4);
    paintGrowing(rgba, state.image.data, h * w);
    Object.assign(state, { rgba, gray: null, label: null });
  } else {
    const gray = new Uint8Array(buf, 16, h * w), label = new Uint8Array(buf, 16 + h * w, h * w);
    paintDigits(gray, label, state.image.data, h * w);
    Object.assign(state, { gray, label, rgba: null });
  }
  ctx.putImageData(state.image, 0, 0);
  Object.assign(state, { width: w, height: h, step, paused: !!(flags & PAUSED) });
  state.frames++;
  const now = performance.now();
  state.received.push(now);
  $("stepn").textContent = step;
  $("paused").textContent = state.paused ? "(paused)" : "";
  $("pause").textContent = state.paused ? "run" : "pause";
  if (state.kind !== "digits") return;
  if (state.scaleCheck) checkScale();
  if (now - lastProbe > 100) { lastProbe = now; updateProbe(); }  // the probe follows the running world
  if (now - lastCount > 250) { lastCount = now; updateLegend(); }
}

function paintDigits(gray, label, px, n) {  // the class colour, as strong as the gray, on white
  for (let i = 0; i < n; i++) {
    const g = gray[i] / 255, c = label[i] === DEAD ? null : PALETTE[label[i]];
    const r = c ? c[0] : 0, gg = c ? c[1] : 0, b = c ? c[2] : 0;
    px[4 * i] = 255 + g * (r - 255); px[4 * i + 1] = 255 + g * (gg - 255); px[4 * i + 2] = 255 + g * (b - 255);
    px[4 * i + 3] = 255;
  }
}

function paintGrowing(rgba, px, n) {  // premultiplied colours over white: 1 - alpha + rgb (the Distill article)
  for (let i = 0; i < 4 * n; i += 4) {
    const clear = 255 - rgba[i + 3];
    px[i] = clear + rgba[i]; px[i + 1] = clear + rgba[i + 1]; px[i + 2] = clear + rgba[i + 2];  // clamped by the array
    px[i + 3] = 255;
  }
}

// The page shows the controls of the kind of world the frames come from (body.growing hides the digits' ones).
function setKind(kind) {
  if (kind === state.kind) return;
  state.kind = kind;
  document.body.classList.toggle("growing", kind === "growing");
  const radio = document.querySelector(`input[name=tool][value=${tool()}]`).closest("label");
  if (radio.dataset.kind && radio.dataset.kind !== kind) {
    document.querySelector(`input[name=tool][value=${FIRST_TOOL[kind]}]`).checked = true;
  }
  const model = $("model");
  if (MODEL_KINDS[model.value] !== kind) model.value = Object.keys(MODEL_KINDS).find((m) => MODEL_KINDS[m] === kind);
  const growing = kind === "growing";
  $("reset").textContent = growing ? "new seed" : "new digits";
  $("reset").title = growing ? "a new world: one seed in the middle" : "a new world of random test digits";
  Object.assign(state, { probeAt: null, probe: null, scaleCheck: null, scale: null });
  drawGuide();
}

setInterval(() => {
  const now = performance.now();
  state.received = state.received.filter((t) => now - t < 2000);
  state.fps = state.received.length / 2;
  $("fps").textContent = state.fps.toFixed(1);
}, 500);

function updateLegend() {  // the share of living cells voting for each class: pale classes are named, not guessed
  const counts = new Array(11).fill(0), label = state.label;
  let alive = 0;
  for (let i = 0; i < label.length; i++) if (label[i] !== DEAD) { counts[label[i]]++; alive++; }
  state.counts = counts;
  legend.querySelectorAll(".chip").forEach((chip) => {
    const n = counts[+chip.dataset.cls];
    chip.classList.toggle("absent", n === 0);
    chip.querySelector("em").textContent = n ? `${Math.max(1, Math.round((100 * n) / alive))}%` : "";
  });
}

// The connected living cells (8 neighbours) around (y, x): their votes and bounding box; null on a dead cell.
function component(y, x) {
  const w = state.width, h = state.height, label = state.label;
  const start = Math.floor(y) * w + Math.floor(x);
  if (!label || label[start] === DEAD) return null;
  const seen = new Uint8Array(w * h), stack = [start], votes = new Array(11).fill(0);
  seen[start] = 1;
  let n = 0, y0 = h, y1 = 0, x0 = w, x1 = 0;
  while (stack.length && n < 200000) {
    const i = stack.pop(); n++;
    votes[label[i]]++;
    const cy = Math.floor(i / w), cx = i % w;
    if (cy < y0) y0 = cy; if (cy > y1) y1 = cy; if (cx < x0) x0 = cx; if (cx > x1) x1 = cx;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      const yy = cy + dy, xx = cx + dx, j = yy * w + xx;
      if (yy >= 0 && yy < h && xx >= 0 && xx < w && !seen[j] && label[j] !== DEAD) { seen[j] = 1; stack.push(j); }
    }
  }
  return { n, votes, height: y1 - y0 + 1, width: x1 - x0 + 1 };
}

function updateProbe() {  // the majority label of the digit at the probe point, and how many of its cells agree
  if (!state.probeAt || !state.label) return;
  const c = component(...state.probeAt);
  if (!c) {
    state.probe = null;
    $("probe").textContent = "no digit there (point at, or tap with the read tool, a coloured digit)";
    return;
  }
  const order = [...c.votes.keys()].sort((a, b) => c.votes[b] - c.votes[a]);
  const best = order[0] === UNDECIDED && c.votes[order[1]] > 0 ? order[1] : order[0];
  const agreement = c.votes[best] / c.n;
  state.probe = { digit: best, agreement, cells: c.n, height: c.height, width: c.width };
  const runner = order.find((d) => d !== best && c.votes[d] > 0);
  const also = runner === undefined ? "" :
    ` <span class="muted">(next: ${runner < 10 ? runner : "undecided"}, ${(100 * c.votes[runner] / c.n).toFixed(0)}%)</span>`;
  $("probe").innerHTML = `${swatch(best, "sw badge")}<span>digit <b>${best < 10 ? best : "?"}</b> (${NAMES[best]}):` +
    ` <b>${(100 * agreement).toFixed(0)}%</b> of its ${c.n} cells agree${also}</span>`;
}

function checkScale() {  // once a stroke has landed: is the drawing near the MNIST scale? Say why when it is not
  const c = component(...state.scaleCheck.at);
  if (!c) { if (--state.scaleCheck.tries <= 0) state.scaleCheck = null; return; }
  state.scaleCheck = null;
  const big = Math.max(c.height, c.width);
  const verdict = big > TOO_BIG ? "too big" : (big < TOO_SMALL ? "too small" : "ok");
  state.scale = { height: c.height, width: c.width, verdict };
  if (verdict === "too big") {
    info(`This drawing is ${c.height}x${c.width} cells: far larger than the digits the cells learned (MNIST: ` +
      `about 20 cells tall in a ${MNIST}x${MNIST} square). Each cell sees only its neighbours, so the parts of a ` +
      "big digit look like other digits and vote for them. Draw it inside one dashed square.", true);
  } else if (verdict === "too small") {
    info(`This drawing is only ${c.height}x${c.width} cells: the cells learned digits about 20 cells tall ` +
      `(a ${MNIST}x${MNIST} square); one this small has too few cells to tell. Draw it about as tall as a dashed square.`,
    true);
  } else if ($("note").className === "warn") {
    info(`${c.height}x${c.width} cells: the MNIST scale`);
  }
}

// --- view: the world fits the window (cells stay sharp squares); the guide shows the MNIST scale ------------------
const narrow = window.matchMedia("(max-width: 700px)");
let hover = null;
function fit() {
  const stage = $("stage"), w = canvas.width, h = canvas.height;
  const availW = stage.clientWidth - (narrow.matches ? 8 : 20);
  const availH = narrow.matches ? Math.max(300, window.innerHeight * 0.62) : stage.clientHeight - 20;
  const s = Math.max(0.1, Math.min(availW / w, availH / h));
  canvas.style.width = `${w * s}px`; canvas.style.height = `${h * s}px`;
  drawGuide();
}
window.addEventListener("resize", fit);
narrow.addEventListener("change", fit);

function drawGuide() {
  const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const cw = Math.round(r.width * dpr), ch = Math.round(r.height * dpr);
  if (guide.width !== cw || guide.height !== ch) {
    guide.width = cw; guide.height = ch; guide.style.width = `${r.width}px`; guide.style.height = `${r.height}px`;
  }
  const g = guide.getContext("2d"), s = cw / canvas.width;  // device pixels per cell
  g.clearRect(0, 0, cw, ch);
  if (state.kind === "digits" && $("guideon").checked && s * MNIST >= 24) {  // the MNIST squares: a drawn digit should fit one
    g.save();
    g.strokeStyle = "rgba(0, 0, 0, 0.22)"; g.lineWidth = Math.max(1, dpr); g.setLineDash([4 * dpr, 4 * dpr]);
    g.beginPath();
    for (let x = MNIST; x < canvas.width; x += MNIST) { g.moveTo(x * s, 0); g.lineTo(x * s, ch); }
    for (let y = MNIST; y < canvas.height; y += MNIST) { g.moveTo(0, y * s); g.lineTo(cw, y * s); }
    g.stroke();
    g.restore();
  }
  if (hover) {
    const t = tool(), [y, x] = hover;
    g.strokeStyle = "rgba(0, 0, 0, 0.6)"; g.lineWidth = Math.max(1, dpr);
    g.beginPath();
    if (t === "digit") g.rect((x - MNIST / 2) * s, (y - MNIST / 2) * s, MNIST * s, MNIST * s);
    else if (t === "damage") g.arc(x * s, y * s, DAMAGE_RADIUS * s, 0, 2 * Math.PI);
    else if (t === "seed") g.rect(Math.floor(x) * s, Math.floor(y) * s, s, s);
    else if (t !== "probe") g.arc(x * s, y * s, Math.max(1, radius() * s), 0, 2 * Math.PI);
    g.stroke();
  }
}

// --- input: mouse, pen and touch (pointer events); one finger draws, a tap with "read" probes ----------------------
function cellAt(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * canvas.width, y = (ev.clientY - r.top) / r.height * canvas.height;
  return [Math.min(canvas.height - 1, Math.max(0, y)), Math.min(canvas.width - 1, Math.max(0, x))];
}
const tool = () => document.querySelector("input[name=tool]:checked").value;
const radius = () => (state.kind === "growing" ? +$("cut").value : +$("width").value / 2);  // the brush's, in cells
// A stroke from ``points``: a digit world draws (or erases) gray; a growing world's eraser cuts every channel.
function sendStroke(points, erase) {
  if (state.kind === "growing") send({ type: "erase", points, radius: radius() });
  else send({ type: "stroke", points, width: +$("width").value, erase });
}
let drawing = null;
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("pointerdown", (ev) => {
  if (drawing || !shown()) return;  // a second finger while drawing, or no world yet
  ev.preventDefault();
  canvas.setPointerCapture(ev.pointerId);
  const p = cellAt(ev), t = tool(), cell = p.map(Math.floor);
  if (ev.button === 0 && t === "seed") { send({ type: "seed", at: cell }); return; }
  if (ev.button === 0 && t === "probe") { state.probeAt = p; updateProbe(); return; }
  if (ev.button === 0 && t === "digit") { send({ type: "digit", at: cell }); state.probeAt = p; return; }
  if (ev.button === 0 && t === "damage") {
    send({ type: "damage", at: cell, radius: DAMAGE_RADIUS }); state.probeAt = p; return;
  }
  drawing = { last: p, erase: ev.button === 2 || t === "erase", id: ev.pointerId };
  sendStroke([p], drawing.erase);
});
canvas.addEventListener("pointermove", (ev) => {
  const p = cellAt(ev);
  hover = ev.pointerType === "mouse" || drawing ? p : null;
  if (!drawing) {
    if (ev.pointerType === "mouse" && state.kind === "digits" && tool() !== "probe") { state.probeAt = p; updateProbe(); }
  } else if (ev.pointerId === drawing.id) {
    sendStroke([drawing.last, p], drawing.erase);
    drawing.last = p;
  }
  drawGuide();
});
const stop = (ev) => {
  if (!drawing || ev.pointerId !== drawing.id) return;
  if (!drawing.erase && state.kind === "digits") {
    state.scaleCheck = { at: drawing.last, tries: 60 };  // measured on the next frames that show it
    state.probeAt = drawing.last;  // the probe follows what was just drawn
  }
  drawing = null;
  if (ev.pointerType !== "mouse") hover = null;
  drawGuide();
};
canvas.addEventListener("pointerup", stop);
canvas.addEventListener("pointercancel", stop);
canvas.addEventListener("pointerleave", () => { if (!drawing) { hover = null; drawGuide(); } });

// --- controls ----------------------------------------------------------------------------------------------------
$("pause").onclick = () => send({ type: "pause", paused: !state.paused });
$("step").onclick = () => { if (!state.paused) send({ type: "pause", paused: true }); send({ type: "step" }); };
$("clear").onclick = () => send({ type: "clear" });
$("reset").onclick = () => send({ type: "reset" });
$("mutate").onclick = () => send({ type: "mutate" });
$("noise").onclick = () => send({ type: "noise", amount: +$("amount").value });
$("amount").oninput = (ev) => { $("amountv").textContent = ev.target.value; };
$("width").oninput = (ev) => { $("widthv").textContent = `${ev.target.value} cells`; drawGuide(); };
$("guideon").onchange = drawGuide;
$("cut").oninput = (ev) => { $("cutv").textContent = `${ev.target.value} cells`; drawGuide(); };
$("speed").oninput = (ev) => { $("speedv").textContent = ev.target.value; send({ type: "speed", steps_per_frame: +ev.target.value }); };
$("model").onchange = (ev) => send({ type: "model", name: ev.target.value });
$("size").onchange = (ev) => send({ type: "size", size: +ev.target.value });
$("retry").onclick = () => { failures = 0; connect(); };
document.querySelectorAll("input[name=tool]").forEach((r) => { r.onchange = drawGuide; });
document.querySelectorAll("[data-preset]").forEach((b) => { b.onclick = () => send({ type: "preset", name: b.dataset.preset }); });
fit();
connect();
