// `convscope serve`: parses options, opens the model (and data), starts the viewer's server and prints its URL.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_UPLOAD_LIMIT, startServer } from '../server/server.js';
import { UsageError, type Command } from './args.js';
import { DATA_OPTIONS, datasetFrom, MODEL_OPTIONS, modelFrom } from './options.js';

export const serveCommand: Command = {
  summary: 'live viewer in the browser: top-9 per feature, activation maps of your image, click a unit to project it, occlusion',
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    split: { value: true, help: 'split of --data to pick images from and rank live (default val, or test where there is none; a plain folder is one split: all of it)' },
    topk: { value: true, help: 'a `convscope topk` output folder: its top-9 are shown instead of ranking --data live' },
    'scan-limit': { value: true, help: 'images of --data ranked for a live top-9 when there is no --topk', default: 500 },
    port: { value: true, help: 'port; 0 picks a free one', default: 8080 },
    host: { value: true, help: 'address to bind; the default serves this machine only', default: '127.0.0.1' },
    'allow-host': { value: true, help: 'comma-separated host names the viewer may be reached by, besides IP addresses and localhost (a name of this machine, behind --host 0.0.0.0); other Host headers are refused, which stops DNS rebinding' },
    'upload-limit': { value: true, help: 'largest accepted upload in bytes', default: DEFAULT_UPLOAD_LIMIT },
  },
  async run(o) {
    const topkDir = o.string('topk');
    if (topkDir !== undefined && !existsSync(join(topkDir, 'index.json'))) throw new UsageError(`--topk ${topkDir} has no index.json (make it with convscope topk)`);
    const model = modelFrom(o);
    let data;
    if (o.has('data')) {
      const split = o.string('split');
      if (split !== undefined && split !== 'train' && split !== 'val' && split !== 'test') throw new UsageError(`--split must be train, val or test; got '${split}'`);
      data = split ? await datasetFrom(o, split) : await datasetFrom(o, 'val').catch(() => datasetFrom(o, 'test'));
    }
    const running = await startServer({
      model, data, topkDir,
      port: o.int('port', 0),
      host: o.required('host'),
      scanLimit: o.int('scan-limit', 1),
      uploadLimit: o.int('upload-limit', 1),
      allowHosts: (o.string('allow-host') ?? '').split(',').map((h) => h.trim()).filter((h) => h.length > 0),
    });
    process.stdout.write(`convscope viewer for ${model.name}${data ? ` on ${data.name}` : ''}: ${running.url}\n`);
    // The server keeps the process alive; Ctrl-C closes it and releases the ORT sessions.
    process.once('SIGINT', () => {
      void running.close().then(() => process.exit(0));
    });
  },
};
