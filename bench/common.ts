// What the benchmarks share: their one argument check and their one agreement measure.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maxAbs, type Tensor } from '../src/tensor.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { PeerProcess } from './peer.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Environment of the --peer-blas peer, besides LD_LIBRARY_PATH and OPENBLAS_NUM_THREADS. */
const PEER_TUNING = { OPENBLAS_THREAD_TIMEOUT: '4' };

/** What every benchmark that compares with PyTorch takes on its command line. */
export interface PeerBenchArgs {
  peer: boolean;
  peerBlas: string | undefined;
  record: boolean;
  repeats: number;
  warmup: number;
  threads: number;
}

/** The PyTorch peers a benchmark asked for (--peer, --peer-blas DIR), each running `script`. */
export function startPeerProcesses(script: string, args: { peer: boolean; peerBlas: string | undefined; threads: number }): PeerProcess[] {
  const started: PeerProcess[] = [];
  if (args.peer) started.push(new PeerProcess('PyTorch', script));
  if (args.peerBlas) {
    // Only the BLAS differs from the first peer. OpenBLAS threads sleep right after a call: by default they spin
    // for 2^28 cycles and fight the OpenMP threads of the next conv (a 2x slower forward here).
    const env = { ...process.env, ...PEER_TUNING, LD_LIBRARY_PATH: [args.peerBlas, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'), OPENBLAS_NUM_THREADS: String(args.threads) };
    started.push(new PeerProcess(/openblas/i.test(args.peerBlas) ? 'PyTorch+OpenBLAS' : 'PyTorch+BLAS', script, env));
  }
  return started;
}


/** An integer command-line value, at least `min`; the benchmarks' one argument check. */
export function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < min) throw new Error(`${name} needs an integer >= ${min}, got ${v ?? 'nothing'}`);
  return n;
}

/** max|ours - ref| / max|ref|: 0 when both are all zero, Infinity when only the reference is. */
export function relError(ours: Tensor, ref: Tensor): number {
  if (ours.shape.join(',') !== ref.shape.join(',')) throw new Error(`shape [${ours.shape}] vs [${ref.shape}]`);
  let m = 0;
  for (let i = 0; i < ref.data.length; i++) m = Math.max(m, Math.abs(ours.data[i] - ref.data[i]));
  const scale = maxAbs(ref.data);
  return scale > 0 ? m / scale : m === 0 ? 0 : Infinity;
}

/** The commit the benchmark ran, marked when the working tree had uncommitted changes to what it measures. */
export function codeCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bench'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} with uncommitted changes to src/ or bench/` : head;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

export function machineFacts(peers: PeerProcess[], threads: number): string {
  let nproc = String(availableParallelism());
  try {
    nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    // keep availableParallelism
  }
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const cpu = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown CPU';
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1].split(/\s+/) ?? [];
  const simd = ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) => flags.includes(f)).join(' ');
  const ortVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version;
  const parts = [
    `nproc ${nproc}`,
    `${cpu}${simd ? ` (${simd})` : ''}`,
    `${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM`,
    `node ${process.version}`,
    `onnxruntime-node ${ortVersion} (intra-op threads ${threads}, graph optimisation all)`,
  ];
  for (const p of peers) {
    const i = p.info;
    if (i) {
      const tuning = p.label === 'PyTorch' ? 'environment as is' : `${Object.entries(PEER_TUNING).map(([k, v]) => `${k}=${v}`).join(' ')} OPENBLAS_NUM_THREADS=${threads}`;
      parts.push(`${p.label}: /usr/bin/python3, torch ${i.torch} (threads ${i.threads}, interop ${i.interop_threads}, mkldnn ${i.mkldnn}), numpy ${i.numpy}, BLAS ${i.blas}, ${tuning}`);
    }
  }
  return parts.join('; ');
}

/**
 * One work timed on our side and on every peer, interleaved repeat by repeat (the first side rotating), after
 * `warmup` untimed rounds, with `gap` ms idle before each call so that no side's spinning threads steal a core.
 */
export async function timeInterleaved(
  ours: () => Promise<unknown>,
  peers: readonly PeerProcess[],
  peerWork: Record<string, unknown>,
  args: { warmup: number; repeats: number; gap: number },
): Promise<{ ours: number[]; peers: number[][] }> {
  const times = { ours: [] as number[], peers: peers.map(() => [] as number[]) };
  for (let r = 0; r < args.warmup; r++) {
    await ours();
    for (const p of peers) await p.request({ cmd: 'run', ...peerWork });
  }
  const sides = [
    async () => {
      await sleep(args.gap);
      const t0 = performance.now();
      await ours();
      times.ours.push(performance.now() - t0);
    },
    ...peers.map((p, j) => async () => {
      await sleep(args.gap);
      times.peers[j].push((await p.request({ cmd: 'run', ...peerWork })).ms as number);
    }),
  ];
  for (let r = 0; r < args.repeats; r++) for (let k = 0; k < sides.length; k++) await sides[(r + k) % sides.length]();
  return times;
}
