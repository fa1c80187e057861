// Check that onnxruntime-node reproduces the PyTorch reference logits of exported models.
//
//   node bench/tooling/check_parity.mjs [DIR ...]      (default: every .cache/torchvision/*/)
//
// Each DIR holds model.onnx, input.npy and logits.npy (as written by export_torchvision.py).
// Prints max |onnx - torch|, the relative error (max abs diff / max |torch|) and whether the
// top-5 classes agree; exits 1 if any relative error exceeds 1e-3 or a model fails to load.
// Standalone on purpose (its own .npy reader): it does not import src/.
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';

function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (descr !== '<f4') throw new Error(`${file}: dtype ${descr}, expected <f4`);
  const off = start + hlen;
  const data = new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + b.length));
  return { shape, data };
}

function top5(a) {
  return Array.from(a.keys()).sort((i, j) => a[j] - a[i]).slice(0, 5);
}

let dirs = process.argv.slice(2);
if (dirs.length === 0) {
  const root = '.cache/torchvision';
  dirs = fs.readdirSync(root).map((d) => path.join(root, d)).filter((d) => fs.existsSync(path.join(d, 'model.onnx')));
}
let bad = 0;
for (const dir of dirs.sort()) {
  try {
    const x = readNpy(path.join(dir, 'input.npy'));
    const ref = readNpy(path.join(dir, 'logits.npy'));
    const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
    const t0 = performance.now();
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) });
    const ms = performance.now() - t0;
    const y = out[session.outputNames[0]].data;
    let maxAbs = 0;
    let refMax = 0;
    for (let i = 0; i < y.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(y[i] - ref.data[i]));
      refMax = Math.max(refMax, Math.abs(ref.data[i]));
    }
    const rel = maxAbs / refMax;
    const same = top5(y).join() === top5(ref.data).join();
    if (rel > 1e-3 || y.length !== ref.data.length) bad++;
    console.log(`${path.basename(dir).padEnd(28)} max|d| ${maxAbs.toExponential(2)}  rel ${rel.toExponential(2)}  top5 ${same ? 'same' : 'DIFFERENT'}  ${ms.toFixed(0)} ms`);
    await session.release?.();
  } catch (e) {
    bad++;
    console.log(`${path.basename(dir).padEnd(28)} FAILED: ${e.message.split('\n')[0]}`);
  }
}
process.exit(bad ? 1 : 0);
