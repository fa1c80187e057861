// convscope's engine on the torchvision exports of export_torchvision.py: imports each model.onnx and compares the
// logits of its input.npy with PyTorch's logits.npy (max |ours - ref| / max |ref|).
//   node --import tsx bench/tooling/engine-parity.ts resnet18-224 squeezenet1_1-224 ...   (folders under .cache/torchvision)
import { join } from 'node:path';
import { Engine } from '../../src/engine/engine.js';
import { loadModel } from '../../src/model/load.js';
import { readNpy } from '../../src/tensor.js';
import { errorLine } from '../../src/util/errors.js';
import { relError } from '../common.js';

const root = process.env.TORCHVISION_EXPORTS ?? join('.cache', 'torchvision');
for (const name of process.argv.slice(2)) {
  const dir = join(root, name);
  try {
    const model = loadModel(join(dir, 'model.onnx'));
    const engine = new Engine(model);
    try {
      const last = model.layers[model.layers.length - 1].name;
      const started = performance.now();
      const ours = (await engine.forward(readNpy(join(dir, 'input.npy')), [last])).activations.get(last)!;
      const ms = performance.now() - started;
      const err = relError(ours, readNpy(join(dir, 'logits.npy')));
      console.log(`${name}: ${model.layers.length} layers, relative error ${err.toExponential(2)} (first forward incl. session ${ms.toFixed(0)} ms)`);
    } finally {
      await engine.dispose();
    }
  } catch (e) {
    console.log(`${name}: refused: ${errorLine(e)}`);
  }
}
