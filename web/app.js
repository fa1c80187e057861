// The viewer page: plain browser JavaScript over the JSON/PNG API of `convscope serve`, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, clicked: null, summary: null };
// Each panel keeps a counter of its requests: an answer that arrives after a newer request was made is dropped,
// so quick changes of layer or feature never mix two answers in one panel.
const latest = { topk: 0, activation: 0, projection: 0, attribution: 0, synthetic: 0, maps: 0 };

function status(text) {
  $('status').textContent = text;
}

/** JSON from the API; a 4xx/5xx answer becomes an Error carrying the server's one-line message. */
async function api(path, init = {}) {
  // The server refuses state changes without this header: another page cannot add it without a CORS preflight.
  const headers = init.method && init.method !== 'GET' ? { ...init.headers, 'x-convscope': '1' } : init.headers;
  const res = await fetch(path, { ...init, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

/** Shows an API image and resolves once it is decoded, so callers (and tests) know it is really there. */
function showImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error(`cannot load ${src}`));
    img.src = src;
  });
}

function layer() {
  return $('layer').value;
}

function feature() {
  return Number($('feature').value);
}

function layerInfo(name) {
  return state.model.layers.find((l) => l.name === name);
}

function guard(task) {
  return task().catch((e) => status(e.message));
}

// ------------------------------------------------------------------ model

async function loadModel() {
  const m = await api('/api/model');
  state.model = m;
  $('model-name').textContent = `${m.name}: input ${m.input.join('x')}${m.data ? `, data ${m.data.name} (${m.data.size} images)` : ''}`;
  const select = $('layer');
  // Only layers with feature maps have units to click; the top-9 layers come first when there are some.
  const maps = m.layers.filter((l) => l.outShape.length === 3);
  const preferred = m.topk.layers.length > 0 ? m.topk.layers : maps.filter((l) => l.type === 'relu').map((l) => l.name);
  for (const l of maps) {
    const opt = document.createElement('option');
    opt.value = l.name;
    opt.textContent = `${l.name} (${l.outShape.join('x')}, field ${l.receptiveField.size[0]} px)`;
    select.append(opt);
  }
  if (preferred.length > 0) select.value = preferred[0];
  for (const method of m.attributionMethods) {
    const opt = document.createElement('option');
    opt.value = method;
    opt.textContent = method;
    $('method').append(opt);
  }
  $('method').value = 'gradcam';
  $('target').max = String((m.classes ? m.classes.length : m.layers[m.layers.length - 1].outShape[0]) - 1);
  $('dataset-controls').hidden = !m.data;
  if (m.data) $('dataset-index').max = String(m.data.size - 1);
  $('topk-note').textContent = m.topk.source === 'topk' ? 'top 9 from the --topk folder' :
    m.topk.source === 'live' ? `top 9 ranked live over the first images of ${m.data.name}` : 'no top 9: start the server with --topk or --data';
  onLayerChange();
  document.body.dataset.ready = 'true';
}

function onLayerChange() {
  const info = layerInfo(layer());
  // A unit of another layer's map may not exist in this one.
  state.clicked = null;
  $('unit-marker').hidden = true;
  $('feature').max = String(info.outShape[0] - 1);
  if (feature() > info.outShape[0] - 1) $('feature').value = '0';
  $('feature-range').textContent = `0..${info.outShape[0] - 1}`;
  return refreshAll();
}

function refreshAll() {
  // A synthetic image belongs to one feature: another feature's would mislead.
  $('synthetic-figure').hidden = true;
  return Promise.all([showTopk(), showActivation(), state.image && !$('maps').hidden ? showMaps() : undefined]);
}

/** Makes `f` the current feature and shows everything for it. */
function selectFeature(f) {
  $('feature').value = String(f);
  state.clicked = null;
  $('unit-marker').hidden = true;
  return refreshAll();
}

// ------------------------------------------------------------------ top 9

async function showTopk() {
  const turn = ++latest.topk;
  const projections = $('topk-projections');
  const patches = $('topk-patches');
  projections.replaceChildren();
  patches.replaceChildren();
  delete projections.dataset.loaded;
  if (!state.model.topk.layers.includes(layer())) return;
  status(`ranking ${layer()} feature ${feature()}…`);
  const t = await api(`/api/topk/${encodeURIComponent(layer())}/${feature()}`);
  if (turn !== latest.topk) return;
  const loads = [];
  for (const e of t.entries) {
    const base = `/api/topk/${encodeURIComponent(t.layer)}/${t.feature}/${e.rank}`;
    const p = new Image();
    p.title = `${e.name} (${e.y},${e.x}) = ${e.value.toPrecision(4)}`;
    projections.append(p);
    loads.push(showImage(p, `${base}/projection.png`));
    if (e.hasPatch) {
      const q = new Image();
      q.title = p.title;
      patches.append(q);
      loads.push(showImage(q, `${base}/patch.png`));
    }
  }
  if (t.page && t.entries.every((e) => !e.hasPatch)) {
    const link = document.createElement('a');
    link.href = `/topk/${t.page}`;
    link.textContent = 'patches: see the page of the topk figure';
    patches.append(link);
  }
  await Promise.all(loads);
  if (turn !== latest.topk) return;
  projections.dataset.loaded = String(t.entries.length);
  status('');
}

// ------------------------------------------------------------------ image, activation map, projection

async function setImage(info) {
  state.image = info;
  state.clicked = null;
  $('unit-marker').hidden = true;
  $('input-caption').textContent = `input: ${info.name}${info.label !== null && state.model.data ? ` (${state.model.data.classes[info.label] ?? info.label})` : ''}`;
  $('occlude').disabled = false;
  $('attribute').disabled = false;
  $('occlusion-figure').hidden = true;
  $('attribution-figure').hidden = true;
  $('projection-figure').hidden = true;
  // Nothing of the image panel shows before there is an image: no empty frames or broken-image icons.
  $('views').hidden = false;
  await showImage($('input-image'), info.url);
  await Promise.all([showPredictions(), showActivation(), $('maps').hidden ? undefined : showMaps()]);
}

/** The image's most probable classes beside it. */
async function showPredictions() {
  const id = state.image.id;
  const p = await api(`/api/images/${id}/predictions?top=5`);
  if (!state.image || state.image.id !== id) return;
  $('predictions').replaceChildren(...p.classes.map((c, i) => {
    const li = document.createElement('li');
    li.textContent = `${c.name} ${(100 * c.probability).toFixed(1)}%`;
    if (i === 0) li.className = 'top';
    return li;
  }));
}

async function showActivation() {
  if (!state.image) return;
  const turn = ++latest.activation;
  const q = `layer=${encodeURIComponent(layer())}&feature=${feature()}`;
  const [h, w] = layerInfo(layer()).outShape.slice(1);
  const [summary] = await Promise.all([
    api(`/api/images/${state.image.id}/activations?layer=${encodeURIComponent(layer())}`),
    showImage($('activation-map'), `/api/images/${state.image.id}/activation.png?${q}`),
  ]);
  if (turn !== latest.activation) return;
  state.summary = summary;
  const f = summary.features[feature()];
  // The heat map spans the map's own range: the colour bar says which values its ends are.
  $('scale-min').textContent = f.min.toPrecision(3);
  $('scale-max').textContent = f.max.toPrecision(3);
  $('activation-caption').textContent = `${layer()} feature ${feature()}: ${h}x${w} map, strongest ${f.max.toPrecision(4)} at (${f.y},${f.x}) (click a unit)`;
  showRanked(summary);
  if (state.clicked) await projectAt(state.clicked.y, state.clicked.x);
}

/** The layer's features ranked by their strongest activation on this image; a click selects one. */
function showRanked(summary) {
  const ranked = [...summary.features].sort((a, b) => b.max - a.max || a.feature - b.feature).slice(0, 12);
  $('ranked-list').replaceChildren(...ranked.map((f) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = `#${f.feature} ${f.max.toPrecision(3)}`;
    b.dataset.feature = String(f.feature);
    if (f.feature === feature()) b.className = 'current';
    b.addEventListener('click', () => guard(() => selectFeature(f.feature)));
    return b;
  }));
  $('ranked').hidden = false;
}

/** Every feature map of the layer for this image, with its index; a click selects the feature. */
async function showMaps() {
  const turn = ++latest.maps;
  const channels = layerInfo(layer()).outShape[0];
  const base = `/api/images/${state.image.id}/activation.png?layer=${encodeURIComponent(layer())}`;
  $('maps-title').textContent = `every feature map of ${layer()} (${channels}), each on its own colour range; click one to select it`;
  const figures = Array.from({ length: channels }, (_, f) => {
    const fig = document.createElement('figure');
    fig.dataset.feature = String(f);
    if (f === feature()) fig.className = 'current';
    const img = new Image();
    img.alt = `feature ${f}`;
    const cap = document.createElement('figcaption');
    cap.textContent = String(f);
    fig.append(img, cap);
    fig.addEventListener('click', () => guard(() => selectFeature(f)));
    return { fig, load: () => showImage(img, `${base}&feature=${f}`) };
  });
  $('maps-grid').replaceChildren(...figures.map((x) => x.fig));
  $('maps').hidden = false;
  // A few at a time: a layer of hundreds of maps must not queue hundreds of requests at once.
  for (let i = 0; i < figures.length && turn === latest.maps; i += 8) await Promise.all(figures.slice(i, i + 8).map((x) => x.load()));
  if (turn === latest.maps) $('maps-grid').dataset.loaded = String(channels);
}

/** The map unit under a click: the image is the map scaled up, so divide by the displayed cell size. */
function unitAt(event) {
  const img = $('activation-map');
  const rect = img.getBoundingClientRect();
  const [h, w] = layerInfo(layer()).outShape.slice(1);
  const y = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - rect.top) / rect.height) * h)));
  const x = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * w)));
  return { y, x };
}

/** Outlines the clicked unit's cell on the map, so the projection beside it has a visible source. */
function markUnit(y, x) {
  const [h, w] = layerInfo(layer()).outShape.slice(1);
  const marker = $('unit-marker');
  const size = $('activation-map').clientWidth;
  Object.assign(marker.style, { top: `${(y * size) / h}px`, left: `${(x * size) / w}px`, width: `${size / w}px`, height: `${size / h}px` });
  marker.hidden = false;
}

async function projectAt(y, x) {
  const turn = ++latest.projection;
  state.clicked = { y, x };
  markUnit(y, x);
  const rule = $('rule').value;
  const url = `/api/images/${state.image.id}/projection.png?layer=${encodeURIComponent(layer())}&feature=${feature()}&y=${y}&x=${x}&rule=${rule}`;
  status(`projecting ${layer()} feature ${feature()} at (${y},${x})…`);
  const res = await fetch(url);
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `projection failed: ${res.status}`);
  const unit = JSON.parse(res.headers.get('x-convscope-unit') || '{}');
  const blob = await res.blob();
  if (turn !== latest.projection) return;
  const img = $('projection');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  await showImage(img, URL.createObjectURL(blob));
  img.dataset.unit = `${layer()}/${feature()}/${y}/${x}/${rule}`;
  $('projection-figure').hidden = false;
  // A unit that does not fire has nothing to project: say so rather than show a flat grey square.
  const silent = !(Number(unit.value) > 0);
  img.hidden = silent;
  $('silent-note').hidden = !silent;
  $('silent-note').textContent = silent ? `${layer()} feature ${feature()} is silent at (${y},${x}) on this image (activation ${Number(unit.value).toPrecision(3)}): nothing to project. Try the strongest unit.` : '';
  $('projection-caption').textContent = `${rule} projection of ${layer()} feature ${feature()} at (${y},${x}), activation ${Number(unit.value).toPrecision(4)}`;
  status('');
}

async function upload(file) {
  status(`uploading ${file.name}…`);
  const info = await api('/api/images', { method: 'POST', body: file, headers: { 'x-filename': file.name.replace(/[^\x20-\x7e]/g, '_') } });
  status('');
  await setImage(info);
}

async function pick() {
  status('reading the dataset image…');
  const info = await api(`/api/dataset/${Number($('dataset-index').value)}`, { method: 'POST' });
  status('');
  await setImage(info);
}

// ------------------------------------------------------------------ attribution and synthetic images

/** Fetches an API image whose facts travel in a header; resolves to the facts once the image is shown. */
async function showWithHeader(img, url, header) {
  const res = await fetch(url);
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `${url}: ${res.status}`);
  const facts = JSON.parse(res.headers.get(header) || '{}');
  const blob = await res.blob();
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  await showImage(img, URL.createObjectURL(blob));
  return facts;
}

async function explain() {
  const turn = ++latest.attribution;
  const method = $('method').value;
  const target = $('target').value.trim();
  const gradcamLayer = method.includes('gradcam') ? `&layer=${encodeURIComponent(layer())}` : '';
  const url = `/api/images/${state.image.id}/attribution.png?method=${method}${target === '' ? '' : `&target=${Number(target)}`}${gradcamLayer}`;
  status(`${method}…`);
  const img = $('attribution-image');
  const facts = await showWithHeader(img, url, 'x-convscope-attribution');
  if (turn !== latest.attribution) return;
  $('attribution-figure').hidden = false;
  img.dataset.method = method;
  const extra = [facts.layer ? `at ${facts.layer}` : '', facts.delta !== undefined && facts.delta !== null ? `delta ${Number(facts.delta).toPrecision(3)}` : ''].filter(Boolean).join(', ');
  $('attribution-caption').textContent = `${method} of ${facts.targetName} (predicted ${facts.predictedName})${extra ? `, ${extra}` : ''}, ${Math.round(facts.ms)} ms`;
  status('');
}

async function showSynthetic() {
  const turn = ++latest.synthetic;
  status(`synthesising ${layer()} feature ${feature()}… (a few seconds the first time)`);
  const img = $('synthetic-image');
  const facts = await showWithHeader(img, `/api/synthetic/${encodeURIComponent(layer())}/${feature()}.png`, 'x-convscope-synthetic');
  if (turn !== latest.synthetic) return;
  $('synthetic-figure').hidden = false;
  img.dataset.feature = `${layer()}/${feature()}`;
  $('synthetic-caption').textContent = `synthetic image: ${layer()} feature ${feature()} map mean ${Number(facts.value).toPrecision(3)} (${facts.source === 'topk' ? 'from the --topk folder' : 'made now'})`;
  status('');
}

// ------------------------------------------------------------------ occlusion

async function occlude() {
  const button = $('occlude');
  const bar = $('occlusion-progress');
  button.disabled = true;
  bar.hidden = false;
  bar.value = 0;
  try {
    const params = new URLSearchParams({ layer: layer() });
    for (const key of ['target', 'window', 'stride']) if ($(key).value.trim() !== '') params.set(key, String(Number($(key).value)));
    let job = await api(`/api/images/${state.image.id}/occlusion?${params}`, { method: 'POST' });
    while (job.state === 'queued' || job.state === 'running') {
      status(job.total > 0 ? `occlusion: ${job.done}/${job.total} positions` : 'occlusion: waiting for the engine…');
      if (job.total > 0) bar.value = job.done / job.total;
      await new Promise((r) => setTimeout(r, 200));
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.state === 'error') throw new Error(`occlusion failed: ${job.error}`);
    bar.value = 1;
    const r = job.result;
    $('occlusion-figure').hidden = false;
    await showImage($('occlusion-image'), `/api/jobs/${job.id}/probability.png`);
    $('occlusion-caption').textContent = `p(${r.targetName}) with a ${r.window[0]} px grey square centred there (${r.rows}x${r.cols} positions); unoccluded ${r.unoccluded.probability.toPrecision(3)}, lowest ${r.minProbability.toPrecision(3)}`;
    status('');
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

$('layer').addEventListener('change', () => guard(onLayerChange));
$('feature').addEventListener('change', () => guard(refreshAll));
$('show-topk').addEventListener('click', () => guard(showTopk));
$('rule').addEventListener('change', () => guard(async () => state.clicked && projectAt(state.clicked.y, state.clicked.x)));
$('upload').addEventListener('change', (e) => {
  const file = e.target.files[0];
  if (file) guard(() => upload(file));
});
$('pick').addEventListener('click', () => guard(pick));
$('occlude').addEventListener('click', () => guard(occlude));
$('attribute').addEventListener('click', () => guard(explain));
$('show-synthetic').addEventListener('click', () => guard(showSynthetic));
$('strongest').addEventListener('click', () => guard(async () => {
  const f = state.summary && state.summary.features[feature()];
  if (f) await projectAt(f.y, f.x);
}));
$('show-maps').addEventListener('click', () => guard(showMaps));
// mousedown, not click: when a just-edited field loses focus on the same press, its change redraws the map and
// Chromium can drop the click that follows.
$('activation-map').addEventListener('mousedown', (e) => {
  if (!state.image || e.button !== 0) return;
  const { y, x } = unitAt(e);
  guard(() => projectAt(y, x));
});

guard(loadModel);
