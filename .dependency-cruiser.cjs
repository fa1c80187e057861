// The layers of src/ (docs/architecture.md): a module imports only from its own layer or lower ones.
// Rank 0 is the bottom. Siblings that share a rank (engine and data; server, cli and distributed) do not import
// each other, except that the CLI may start the server and the distributed workers.
const LAYERS = [
  ['tensor', 'util', 'onnx'],
  ['model'],
  ['engine', 'data'],
  ['train'],
  ['analysis'],
  ['render'],
  ['report'],
  ['server', 'cli', 'distributed'],
];
const ALLOWED_SIBLINGS = { tensor: ['util'], onnx: ['util', 'tensor'], cli: ['server', 'distributed'] };

const dir = (name) => (name === 'tensor' ? '^src/tensor\\.ts$' : `^src/${name}/`);
const rank = (name) => LAYERS.findIndex((layer) => layer.includes(name));

const forbidden = [];
for (const layer of LAYERS) {
  for (const name of layer) {
    const above = LAYERS.flat().filter((other) => rank(other) > rank(name));
    const siblings = layer.filter((other) => other !== name && !(ALLOWED_SIBLINGS[name] ?? []).includes(other));
    const targets = [...above, ...siblings];
    if (targets.length === 0) continue;
    forbidden.push({
      name: `layer-${name}`,
      severity: 'error',
      comment: `src/${name} may import only from its own layer or lower ones (docs/architecture.md)`,
      from: { path: dir(name) },
      to: { path: targets.map(dir) },
    });
  }
}
forbidden.push({
  name: 'no-runtime-cycle',
  severity: 'error',
  comment: 'a runtime import cycle between files (type-only imports do not count)',
  from: { path: '^src/' },
  to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
});

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
