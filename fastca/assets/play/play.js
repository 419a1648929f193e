// fastca play: draws the frames the server streams and sends the user's edits.
// Frame: "FCA1", step u32, height u16, width u16, flags u32, then gray (u8) and class (u8:
// 0..9, 10 undecided, 255 dead) per cell. Colours: the article's palette, as fastca.viz.
"use strict";
const PALETTE = [[128, 0, 0], [230, 25, 75], [70, 240, 240], [210, 245, 60], [250, 190, 190],
  [170, 110, 40], [170, 255, 195], [165, 163, 159], [0, 128, 128], [128, 128, 0], [0, 0, 0]];
const DEAD = 255;
const canvas = document.getElementById("world");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const state = { gray: null, label: null, width: 0, height: 0, step: 0, paused: false, frames: 0, fps: 0, image: null,
                received: [], errors: [], refused: null };
window.fastca = state;  // for tests and the curious

const legend = $("legend");
PALETTE.forEach((c, d) => {
  const s = document.createElement("span");
  s.innerHTML = `<i style="background: rgb(${c})"></i>${d < 10 ? d : "?"}`;
  if (d === 10) s.title = "undecided: every class channel negative";
  legend.appendChild(s);
});

const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.binaryType = "arraybuffer";
const send = (msg) => { if (ws.readyState === 1) ws.send(JSON.stringify(msg)); };

ws.onmessage = (ev) => {
  if (typeof ev.data === "string") {
    const msg = JSON.parse(ev.data);
    if (msg.type === "stats") {
      $("sps").textContent = msg.steps_per_s.toFixed(0);
      $("backend").textContent = `${msg.backend}, ${msg.model}`;
    } else if (msg.type === "error") {
      state.errors.push(msg.message);
      $("error").textContent = msg.message;
    } else if (msg.type === "refused") {  // the server is full (or cannot run a world): it closes this tab's session
      state.refused = msg.message;
      $("error").textContent = `not started: ${msg.message}`;
    } else if (msg.type === "digit") {
      $("error").textContent = "";
      $("probe").textContent = `dropped a ${msg.label}`;
    }
    return;
  }
  drawFrame(ev.data);
  send({ type: "ack" });
};
ws.onclose = () => {  // a refusal stays on screen: it says why
  $("error").textContent = state.refused ? `not started: ${state.refused}` : "disconnected from the server";
};

function drawFrame(buf) {
  const view = new DataView(buf);
  const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic !== "FCA1") return;
  const step = view.getUint32(4, true), h = view.getUint16(8, true), w = view.getUint16(10, true);
  const flags = view.getUint32(12, true);
  const gray = new Uint8Array(buf, 16, h * w), label = new Uint8Array(buf, 16 + h * w, h * w);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w; canvas.height = h; state.image = null; fit();
    if ([...$("size").options].some((o) => o.value === String(h))) $("size").value = String(h);
  }
  if (!state.image) state.image = ctx.createImageData(w, h);
  const px = state.image.data;
  for (let i = 0; i < h * w; i++) {
    const g = gray[i] / 255, c = label[i] === DEAD ? null : PALETTE[label[i]];
    const r = c ? c[0] : 0, gg = c ? c[1] : 0, b = c ? c[2] : 0;
    px[4 * i] = 255 + g * (r - 255); px[4 * i + 1] = 255 + g * (gg - 255); px[4 * i + 2] = 255 + g * (b - 255);
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(state.image, 0, 0);
  Object.assign(state, { gray, label, width: w, height: h, step, paused: !!(flags & 1) });
  state.frames++;
  state.received.push(performance.now());
  $("stepn").textContent = step;
  $("paused").textContent = state.paused ? "(paused)" : "";
  $("pause").textContent = state.paused ? "run" : "pause";
}

setInterval(() => {
  const now = performance.now();
  state.received = state.received.filter((t) => now - t < 2000);
  state.fps = state.received.length / 2;
  $("fps").textContent = state.fps.toFixed(1);
}, 500);

function fit() {  // the view scales to the window (cells stay sharp squares: image-rendering pixelated)
  const stage = $("stage"), w = canvas.width, h = canvas.height;
  const s = Math.min((stage.clientWidth - 20) / w, (stage.clientHeight - 20) / h);
  canvas.style.width = `${w * s}px`; canvas.style.height = `${h * s}px`;
}
window.addEventListener("resize", fit);

function cellAt(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * canvas.width, y = (ev.clientY - r.top) / r.height * canvas.height;
  return [Math.min(canvas.height - 1, Math.max(0, y)), Math.min(canvas.width - 1, Math.max(0, x))];
}
const tool = () => document.querySelector("input[name=tool]:checked").value;
let drawing = null;
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("pointerdown", (ev) => {
  canvas.setPointerCapture(ev.pointerId);
  const p = cellAt(ev);
  if (tool() === "digit" && ev.button === 0) { send({ type: "digit", at: p.map(Math.floor) }); return; }
  drawing = { last: p, erase: ev.button === 2 || tool() === "erase" };
  send({ type: "stroke", points: [p], width: +$("width").value, erase: drawing.erase });
});
canvas.addEventListener("pointermove", (ev) => {
  const p = cellAt(ev);
  if (!drawing) { probe(p); return; }
  send({ type: "stroke", points: [drawing.last, p], width: +$("width").value, erase: drawing.erase });
  drawing.last = p;
});
const stop = () => { drawing = null; };
canvas.addEventListener("pointerup", stop);
canvas.addEventListener("pointercancel", stop);

function probe([y, x]) {  // the connected alive cells under the pointer: their majority label and agreement
  if (!state.label) return;
  const w = state.width, h = state.height, start = Math.floor(y) * w + Math.floor(x);
  if (state.label[start] === DEAD) { $("probe").textContent = "no digit under the pointer"; return; }
  const seen = new Uint8Array(w * h), stack = [start], votes = new Array(11).fill(0);
  seen[start] = 1;
  let n = 0;
  while (stack.length && n < 50000) {
    const i = stack.pop(); n++;
    votes[state.label[i]]++;
    const cy = Math.floor(i / w), cx = i % w;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      const yy = cy + dy, xx = cx + dx, j = yy * w + xx;
      if (yy >= 0 && yy < h && xx >= 0 && xx < w && !seen[j] && state.label[j] !== DEAD) { seen[j] = 1; stack.push(j); }
    }
  }
  const best = votes.slice(0, 10).reduce((b, v, d, a) => (v > a[b] ? d : b), 0);
  $("probe").innerHTML = `digit under the pointer: <b>${best}</b>, ${(100 * votes[best] / n).toFixed(0)}% of its ${n} cells agree`;
}

$("pause").onclick = () => send({ type: "pause", paused: !state.paused });
$("step").onclick = () => { if (!state.paused) send({ type: "pause", paused: true }); send({ type: "step" }); };
$("clear").onclick = () => send({ type: "clear" });
$("mutate").onclick = () => send({ type: "mutate" });
$("speed").oninput = (ev) => { $("speedv").textContent = ev.target.value; send({ type: "speed", steps_per_frame: +ev.target.value }); };
$("model").onchange = (ev) => send({ type: "model", name: ev.target.value });
$("size").onchange = (ev) => send({ type: "size", size: +ev.target.value });
document.querySelectorAll("[data-preset]").forEach((b) => { b.onclick = () => send({ type: "preset", name: b.dataset.preset }); });
fit();
