"""The dashboard's single page: HTML, CSS and JavaScript in one string, no external assets.

`page(table, model, note, prompt)` fills the template's marked places: the description of the model served,
a note under it and the first prompt, and from the sampler table (lab.ops.sampling.SAMPLERS) one slider per knob, in the order the
chain applies them, the JavaScript's lists of knobs and integer knobs, the knobs whose range ends at the
vocabulary size, and the names of the filters in the legend.
"""

from __future__ import annotations

import html
import json

from lab.ops.sampling import SAMPLERS

TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lab · sampler dashboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em auto;max-width:76em;color:#222}
h1{font-size:1.3em;margin:.2em 0} .sub{color:#666;font-size:.85em}
.grid{display:grid;grid-template-columns:20em 1fr;gap:1.2em}
label{display:block;font-size:.85em;margin-top:.6em} input[type=range]{width:100%}
textarea{width:100%;height:6em;font-family:monospace}
#output{font-family:monospace;white-space:pre-wrap;line-height:1.7;border:1px solid #ddd;padding:.6em;min-height:6em}
#output .prompt{color:#888} #output .tok{cursor:pointer;border-radius:2px}
#output .tok.sel{outline:2px solid #333}
.panel{border:1px solid #ddd;padding:.5em;margin-top:.8em} .panel h2{font-size:.95em;margin:.1em 0 .4em}
#stats td{padding:.1em .8em .1em 0;font-size:.85em} #status{font-size:.8em;color:#666}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;vertical-align:middle}
</style></head><body>
<h1>Sampler dashboard</h1><div class="sub" id="model">Model: <!--MODEL--></div>
<div class="sub" id="note"><!--NOTE--></div>
<div class="grid"><div>
<label>Prompt<textarea id="prompt"><!--PROMPT--></textarea></label>
<!--KNOB SLIDERS-->
<label>seed <b id="seed_v"></b><input type="range" id="seed" min="0" max="99" step="1" value="0"></label>
<label>new tokens <b id="max_tokens_v"></b><input type="range" id="max_tokens" min="1" max="256" step="1" value="120"></label>
<div class="panel"><h2>Repetition and diversity</h2><table id="stats"></table></div>
<div id="status">idle</div>
</div><div>
<div id="output"></div>
<div class="sub">Each token is coloured by its probability under the distribution it was drawn from
(white = certain, red = unlikely); click a token to see the distribution at that step.</div>
<div class="panel"><h2 id="bars_title">Next-token distribution</h2>
<div class="legend"><span style="background:#9bb7d4"></span>before filtering (after penalty and temperature)
<span style="background:#d9534f"></span>after <!--FILTER NAMES--></div><svg id="bars" width="100%" height="230"></svg></div>
<div class="panel"><h2>Entropy per step (nats)</h2>
<div class="legend"><span style="background:#9bb7d4"></span>before filtering<span style="background:#d9534f"></span>after</div>
<svg id="entropy" width="100%" height="150"></svg></div>
</div></div>
<script>
const knobs = [/*KNOB NAMES*/"seed","max_tokens"];
const ints = new Set([/*INTEGER KNOBS*/"seed","max_tokens"]);
const vocabCapped = {/*VOCAB CAPPED*/};
let last = null, selected = 0, pending = null, inflight = false, requests = 0;
const $ = id => document.getElementById(id);
const esc = s => s.replace(/&/g,"&amp;").replace(/</g,"&lt;").replace(/>/g,"&gt;");
const shown = s => s.replace(/\n/g,"↵\n");
function body(){ const b = {prompt: $("prompt").value};
  for (const k of knobs){ const v = $(k).value; b[k] = ints.has(k) ? parseInt(v) : parseFloat(v); $(k+"_v").textContent = v; }
  return b; }
function schedule(){ clearTimeout(pending); pending = setTimeout(run, 120); }
async function run(){
  if (inflight){ schedule(); return; }
  inflight = true; $("status").textContent = "generating…";
  try {
    const r = await fetch("/api/generate", {method:"POST", headers:{"Content-Type":"application/json"}, body: JSON.stringify(body())});
    const j = await r.json();
    if (!r.ok){ $("status").textContent = "error: " + j.error; return; }
    last = j; selected = Math.min(selected, j.tokens.length - 1); if (selected < 0) selected = 0;
    requests += 1; render();
    $("status").textContent = `done #${requests}: ${j.tokens.length} tokens in ${j.stats.milliseconds.toFixed(0)} ms`;
    $("status").dataset.requests = requests;
  } catch(e){ $("status").textContent = "error: " + e; }
  finally { inflight = false; }
}
function colour(p){ const a = Math.max(0, Math.min(1, 1 - p)); return `rgba(217,83,79,${(0.85*a).toFixed(3)})`; }
function render(){
  const out = $("output"); out.innerHTML = `<span class="prompt">${esc($("prompt").value)}</span>`;
  last.tokens.forEach((t, i) => {
    const s = document.createElement("span"); s.className = "tok" + (i === selected ? " sel" : "");
    s.textContent = shown(t.text); s.style.background = colour(t.prob); s.dataset.prob = t.prob;
    s.title = `id ${t.id} · p=${t.prob.toFixed(3)} · kept ${t.kept}`; s.onclick = () => { selected = i; render(); };
    out.appendChild(s); });
  bars(); entropy(); stats();
}
function bars(){
  const svg = $("bars"), W = svg.clientWidth || 600, H = 230; svg.innerHTML = "";
  if (!last.tokens.length) return; const t = last.tokens[selected];
  $("bars_title").textContent = `Next-token distribution at step ${selected + 1} (chose ${JSON.stringify(t.text)})`;
  const n = t.top.length, bw = (W - 60) / n, max = Math.max(...t.top.map(x => Math.max(x.before, x.after)), 1e-9);
  let h = `<line x1="40" y1="${H-40}" x2="${W}" y2="${H-40}" stroke="#999"/><text x="0" y="12" font-size="10">p=${max.toFixed(2)}</text>`;
  t.top.forEach((x, i) => { const x0 = 45 + i*bw, hb = (H-60)*x.before/max, ha = (H-60)*x.after/max;
    h += `<rect class="before" x="${x0}" y="${H-40-hb}" width="${bw*0.4}" height="${hb}" fill="#9bb7d4"><title>before ${x.before.toFixed(4)}</title></rect>`;
    h += `<rect class="after" x="${x0+bw*0.42}" y="${H-40-ha}" width="${bw*0.4}" height="${ha}" fill="#d9534f"><title>after ${x.after.toFixed(4)}</title></rect>`;
    h += `<text x="${x0+bw*0.4}" y="${H-25}" font-size="10" text-anchor="middle">${esc(JSON.stringify(x.text)).slice(0,12)}</text>`; });
  h += `<text x="${W/2}" y="${H-5}" font-size="10" text-anchor="middle">the 10 most likely tokens before filtering</text>`;
  svg.innerHTML = h;
}
function entropy(){
  const svg = $("entropy"), W = svg.clientWidth || 600, H = 150, T = last.tokens; svg.innerHTML = "";
  if (!T.length) return; const m = Math.max(...T.map(t => t.entropy_before), 1e-6);
  const pts = key => T.map((t, i) => `${40 + i*(W-50)/Math.max(T.length-1,1)},${H-20-(H-35)*t[key]/m}`).join(" ");
  svg.innerHTML = `<polyline points="${pts("entropy_before")}" fill="none" stroke="#9bb7d4" stroke-width="1.5"/>` +
    `<polyline points="${pts("entropy_after")}" fill="none" stroke="#d9534f" stroke-width="1.5"/>` +
    `<text x="0" y="12" font-size="10">${m.toFixed(2)} nats</text><text x="${W/2}" y="${H-3}" font-size="10" text-anchor="middle">generation step</text>`;
}
function stats(){
  const s = last.stats, f = x => x === null ? "—" : (typeof x === "number" ? (Number.isInteger(x) ? x : x.toFixed(3)) : x);
  const rows = [["distinct-1 (unique tokens / tokens)", s.distinct_1], ["distinct-2", s.distinct_2],
    ["repeated 4-grams (fraction)", s.repeated_4gram_fraction], ["mean entropy after filtering (nats)", s.mean_entropy_after],
    ["ends in a loop of period", s.loop_period], ["loop starts at token", s.loop_start]];
  $("stats").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td class="v">${f(v)}</td></tr>`).join("");
}
for (const k of knobs) $(k).addEventListener("input", schedule);
$("prompt").addEventListener("input", schedule);
fetch("/api/info").then(r => r.json()).then(i => {
  $("max_tokens").max = i.max_tokens;
  for (const [k, m] of Object.entries(vocabCapped)) $(k).max = Math.min(m, i.vocab_size); body(); run(); });
</script></body></html>
"""


def _slider(k) -> str:
    lo, hi, step = k.slider
    start = k.neutral if k.start is None else k.start
    return (f'<label>{html.escape(k.label)} <b id="{k.name}_v"></b><input type="range" id="{k.name}" '
            f'min="{lo:g}" max="{hi:g}" step="{step:g}" value="{start:g}"></label>\n')  # fmt: skip


def page(table=SAMPLERS, model: str = "", note: str = "", prompt: str = "def ") -> str:
    """The page, with a slider for every knob of `table`, saying which `model` it serves (and `note`), and
    `prompt` as the prompt it first generates from."""
    names = [k.name for k in table]
    filters = names[names.index("temperature") + 1 :]
    fill = {
        "<!--KNOB SLIDERS-->\n": "".join(_slider(k) for k in table),
        "<!--FILTER NAMES-->": html.escape(" / ".join(n.replace("_", "-") for n in filters)),
        "/*KNOB NAMES*/": "".join(f"{json.dumps(n)}," for n in names),
        "/*INTEGER KNOBS*/": "".join(f"{json.dumps(k.name)}," for k in table if k.integer),
        "/*VOCAB CAPPED*/": ",".join(
            f"{json.dumps(k.name)}: {k.slider[1]:g}" for k in table if k.valid[1] is None
        ),
        # last, so that nothing in the (escaped) description is taken for a mark
        "<!--MODEL-->": html.escape(model),
        "<!--NOTE-->": html.escape(note),
        "<!--PROMPT-->": html.escape(prompt),
    }
    out = TEMPLATE
    for mark, text in fill.items():
        out = out.replace(mark, text)
    return out
