import { readSafetensorsModel } from '../src/model/safetensors.js';
import { Engine } from '../src/engine/engine.js';
import { readNpy, tensor } from '../src/tensor.js';
import { assertClose, fixtureNpy, fixture } from './helpers.js';
const model = readSafetensorsModel(fixture('weights.safetensors'));
const eng = new Engine(model);
const x = fixtureNpy('input.npy');
const r = await eng.forward(x, ['pool1','norm1','norm2','relu5','pool5','fc6','fc8'], {switches: true});
for (const [k, f] of [['fc8','logits.npy'],['pool1','act_pool1.npy'],['norm1','act_norm1.npy'],['norm2','act_norm2.npy'],['relu5','act_relu5.npy'],['pool5','act_pool5.npy'],['fc6','act_fc6.npy']]) {
  console.log(k, assertClose(r.activations.get(k)!, fixtureNpy(f), 1e-4, k));
}
const sw = r.switches.get('pool5')!; console.log('pool5 switches', sw.shape, Array.from(sw.data.slice(0,8)).map(Number));
for (const f of [19, 59, 8]) {
  const a = r.activations.get('relu5')!;
  const mask = tensor([1,64,4,4]);
  let best = -1, bi = 0; for (let i = 0; i < 16; i++) if (a.data[f*16+i] > best) { best = a.data[f*16+i]; bi = i; }
  mask.data[f*16+bi] = 1;
  for (const lrn of ['gradient','identity'] as const) {
    const p = await eng.backward(x, {layer:'relu5', mask, value:'activation'}, {rule:'deconvnet', lrn});
    console.log(f, lrn, assertClose(p.projection, fixtureNpy(`zf_proj_relu5_f${f}_${lrn==='gradient'?'lrngrad':'lrnskip'}.npy`), 1e-4, 'proj'));
  }
  const p1 = await eng.backward(x, {layer:'relu5', mask, value:'one'}, {rule:'deconvnet', lrn:'gradient'});
  console.log(f, 'captum', assertClose(p1.projection, fixtureNpy(`deconv_captum_relu5_f${f}.npy`), 1e-4, 'captum'));
}
const m = tensor([1,10]); m.data[2] = 1;
for (const [rule, file] of [['deconvnet','deconv_captum_target2.npy'],['guided','guided_captum_target.npy'],['gradient','gradient_target.npy']] as const) {
  const p = await eng.backward(x, {layer:'fc8', mask: m, value:'one'}, {rule, lrn:'gradient'});
  console.log(rule, assertClose(p.projection, fixtureNpy(file), 1e-4, rule));
}
