// A minimal protobuf codec for the subset of onnx.proto that convscope reads and writes.
// Hand-written rather than generated: ONNX files of 250 MB must decode without copying raw tensor bytes,
// and the schema subset is small and frozen (field numbers from onnx/onnx.proto, IR version 8).

export const enum DataType {
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  INT32 = 6,
  INT64 = 7,
  BOOL = 9,
  DOUBLE = 11,
}

export interface TensorProto {
  name: string;
  dims: number[];
  dataType: number;
  /** Little-endian bytes of the tensor, whatever field they were stored in. */
  raw: Uint8Array;
}

export type AttributeValue =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorProto }
  | { kind: 'floats'; value: number[] }
  | { kind: 'ints'; value: number[] }
  | { kind: 'graph'; value: GraphProto };

export interface NodeProto {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Map<string, AttributeValue>;
}

export interface ValueInfo {
  name: string;
  elemType: number;
  /** A number for a fixed dimension, a string for a symbolic one. */
  shape: (number | string)[];
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

export interface ModelProto {
  irVersion: number;
  opsetVersion: number;
  producer: string;
  graph: GraphProto;
  /** metadata_props: free-form key/value strings that travel with the model (convscope stores its layer list there). */
  metadataProps?: { key: string; value: string }[];
}

// ---------------------------------------------------------------- writing

class Writer {
  private chunks: Uint8Array[] = [];
  private scratch = new Uint8Array(64);
  private scratchLen = 0;
  length = 0;

  private flushScratch(): void {
    if (this.scratchLen > 0) {
      this.chunks.push(this.scratch.slice(0, this.scratchLen));
      this.scratchLen = 0;
    }
  }
  private byte(b: number): void {
    if (this.scratchLen === this.scratch.length) this.flushScratch();
    this.scratch[this.scratchLen++] = b;
    this.length++;
  }
  varint(v: number | bigint): void {
    let n = BigInt.asUintN(64, BigInt(v));
    while (n >= 0x80n) {
      this.byte(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.byte(Number(n));
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.flushScratch();
    this.chunks.push(data);
    this.length += data.length;
  }
  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }
  int(field: number, v: number): void {
    this.tag(field, 0);
    this.varint(v);
  }
  float(field: number, v: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    for (const x of b) this.byte(x);
  }
  message(field: number, build: (w: Writer) => void): void {
    const inner = new Writer();
    build(inner);
    this.tag(field, 2);
    this.varint(inner.length);
    this.flushScratch();
    inner.flushScratch();
    for (const c of inner.chunks) this.chunks.push(c);
    this.length += inner.length;
  }
  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

function writeTensor(w: Writer, t: TensorProto): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, t.raw);
}

function writeAttribute(w: Writer, name: string, a: AttributeValue): void {
  w.string(1, name);
  switch (a.kind) {
    case 'float': w.float(2, a.value); w.int(20, 1); break;
    case 'int': w.int(3, a.value); w.int(20, 2); break;
    case 'string': w.string(4, a.value); w.int(20, 3); break;
    case 'tensor': w.message(5, (m) => writeTensor(m, a.value)); w.int(20, 4); break;
    case 'graph': w.message(6, (m) => writeGraph(m, a.value)); w.int(20, 5); break;
    case 'floats': for (const f of a.value) w.float(7, f); w.int(20, 6); break;
    case 'ints': for (const i of a.value) w.int(8, i); w.int(20, 7); break;
  }
}

function writeValueInfo(w: Writer, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tt) => {
      tt.int(1, v.elemType);
      tt.message(2, (shape) => {
        for (const d of v.shape) {
          shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        }
      });
    }),
  );
}

function writeGraph(w: Writer, g: GraphProto): void {
  for (const n of g.nodes) {
    w.message(1, (m) => {
      for (const i of n.inputs) m.string(1, i);
      for (const o of n.outputs) m.string(2, o);
      m.string(3, n.name);
      m.string(4, n.opType);
      for (const [k, a] of n.attributes) m.message(5, (am) => writeAttribute(am, k, a));
      if (n.domain) m.string(7, n.domain);
    });
  }
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, (m) => writeTensor(m, t));
  for (const v of g.inputs) w.message(11, (m) => writeValueInfo(m, v));
  for (const v of g.outputs) w.message(12, (m) => writeValueInfo(m, v));
}

export function encodeModel(model: ModelProto): Uint8Array {
  const w = new Writer();
  w.int(1, model.irVersion);
  w.string(2, model.producer);
  w.message(7, (g) => writeGraph(g, model.graph));
  w.message(8, (op) => {
    op.string(1, '');
    op.int(2, model.opsetVersion);
  });
  for (const { key, value } of model.metadataProps ?? []) {
    w.message(14, (e) => {
      e.string(1, key);
      e.string(2, value);
    });
  }
  return w.finish();
}

// ---------------------------------------------------------------- reading

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }
  get done(): boolean {
    return this.pos >= this.end;
  }
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new Error('varint too long');
    }
  }
  int(): number {
    return Number(BigInt.asIntN(64, this.varint()));
  }
  lengthDelimited(): Reader {
    const len = Number(this.varint());
    if (this.pos + len > this.end) throw new Error('truncated field');
    const r = new Reader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return r;
  }
  bytes(): Uint8Array {
    const r = this.lengthDelimited();
    return this.buf.subarray(r.pos, r.end);
  }
  string(): string {
    return new TextDecoder().decode(this.bytes());
  }
  float(): number {
    if (this.pos + 4 > this.end) throw new Error('truncated float');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.lengthDelimited();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
  /** Calls visit(field, wire) for each field; visit returns false to have the field skipped. */
  fields(visit: (field: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = Number(this.varint());
      const field = key >>> 3;
      const wire = key & 7;
      if (!visit(field, wire)) this.skip(wire);
    }
  }
  /** Repeated numeric field: packed (wire 2) or not. */
  repeated(wire: number, read: (r: Reader) => number, out: number[]): void {
    if (wire === 2) {
      const r = this.lengthDelimited();
      while (!r.done) out.push(read(r));
    } else out.push(read(this));
  }
}

function readTensor(r: Reader): TensorProto {
  const t: TensorProto = { name: '', dims: [], dataType: 0, raw: new Uint8Array(0) };
  const floats: number[] = [];
  const ints: number[] = [];
  const int64s: number[] = [];
  const doubles: number[] = [];
  let external = false;
  r.fields((f, wire) => {
    switch (f) {
      case 1: r.repeated(wire, (x) => x.int(), t.dims); return true;
      case 2: t.dataType = r.int(); return true;
      case 4: r.repeated(wire, (x) => x.float(), floats); return true;
      case 5: r.repeated(wire, (x) => x.int(), ints); return true;
      case 7: r.repeated(wire, (x) => x.int(), int64s); return true;
      case 8: t.name = r.string(); return true;
      case 9: t.raw = r.bytes(); return true;
      case 10: r.repeated(wire, (x) => { const v = new DataView(x.buf.buffer, x.buf.byteOffset + x.pos, 8).getFloat64(0, true); x.pos += 8; return v; }, doubles); return true;
      case 14: external = r.int() === 1; return true;
      default: return false;
    }
  });
  if (external) throw new Error(`tensor '${t.name}' stores its data in an external file, which convscope does not read`);
  if (t.raw.length === 0) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (floats.length) t.raw = new Uint8Array(Float32Array.from(floats).buffer);
    else if (int64s.length) t.raw = new Uint8Array(BigInt64Array.from(int64s.map((v) => BigInt(v))).buffer);
    else if (doubles.length) t.raw = new Uint8Array(Float64Array.from(doubles).buffer);
    else if (ints.length) {
      // int32_data also carries the narrower types (uint8, int8, bool, ...), one value per element.
      if (t.dataType === DataType.INT32) t.raw = new Uint8Array(Int32Array.from(ints).buffer);
      else t.raw = Uint8Array.from(ints);
    } else if (count !== 0) t.raw = new Uint8Array(0);
  }
  return t;
}

function readAttribute(r: Reader): [string, AttributeValue | undefined] {
  let name = '';
  let type = 0;
  let f = 0;
  let i = 0;
  let s = '';
  let t: TensorProto | undefined;
  let g: GraphProto | undefined;
  const floats: number[] = [];
  const ints: number[] = [];
  r.fields((field, wire) => {
    switch (field) {
      case 1: name = r.string(); return true;
      case 2: f = r.float(); return true;
      case 3: i = r.int(); return true;
      case 4: s = r.string(); return true;
      case 5: t = readTensor(r.lengthDelimited()); return true;
      case 6: g = readGraph(r.lengthDelimited()); return true;
      case 7: r.repeated(wire, (x) => x.float(), floats); return true;
      case 8: r.repeated(wire, (x) => x.int(), ints); return true;
      case 20: type = r.int(); return true;
      default: return false;
    }
  });
  switch (type) {
    case 1: return [name, { kind: 'float', value: f }];
    case 2: return [name, { kind: 'int', value: i }];
    case 3: return [name, { kind: 'string', value: s }];
    case 4: return [name, t ? { kind: 'tensor', value: t } : undefined];
    case 5: return [name, g ? { kind: 'graph', value: g } : undefined];
    case 6: return [name, { kind: 'floats', value: floats }];
    case 7: return [name, { kind: 'ints', value: ints }];
    default: return [name, undefined];
  }
}

function readNode(r: Reader): NodeProto {
  const n: NodeProto = { name: '', opType: '', domain: '', inputs: [], outputs: [], attributes: new Map() };
  r.fields((f) => {
    switch (f) {
      case 1: n.inputs.push(r.string()); return true;
      case 2: n.outputs.push(r.string()); return true;
      case 3: n.name = r.string(); return true;
      case 4: n.opType = r.string(); return true;
      case 5: {
        const [k, v] = readAttribute(r.lengthDelimited());
        if (v) n.attributes.set(k, v);
        return true;
      }
      case 7: n.domain = r.string(); return true;
      default: return false;
    }
  });
  return n;
}

function readValueInfo(r: Reader): ValueInfo {
  const v: ValueInfo = { name: '', elemType: 0, shape: [] };
  r.fields((f) => {
    if (f === 1) v.name = r.string();
    else if (f === 2) {
      const type = r.lengthDelimited();
      type.fields((tf) => {
        if (tf !== 1) return false;
        const tt = type.lengthDelimited();
        tt.fields((ttf) => {
          if (ttf === 1) v.elemType = tt.int();
          else if (ttf === 2) {
            const shape = tt.lengthDelimited();
            shape.fields((sf) => {
              if (sf !== 1) return false;
              const dim = shape.lengthDelimited();
              let d: number | string = '?';
              dim.fields((df) => {
                if (df === 1) d = dim.int();
                else if (df === 2) d = dim.string();
                else return false;
                return true;
              });
              v.shape.push(d);
              return true;
            });
          } else return false;
          return true;
        });
        return true;
      });
    } else return false;
    return true;
  });
  return v;
}

function readGraph(r: Reader): GraphProto {
  const g: GraphProto = { name: '', nodes: [], initializers: [], inputs: [], outputs: [] };
  r.fields((f) => {
    switch (f) {
      case 1: g.nodes.push(readNode(r.lengthDelimited())); return true;
      case 2: g.name = r.string(); return true;
      case 5: g.initializers.push(readTensor(r.lengthDelimited())); return true;
      case 11: g.inputs.push(readValueInfo(r.lengthDelimited())); return true;
      case 12: g.outputs.push(readValueInfo(r.lengthDelimited())); return true;
      default: return false;
    }
  });
  return g;
}

export function decodeModel(buf: Uint8Array): ModelProto {
  const r = new Reader(buf);
  let graph: GraphProto | undefined;
  let irVersion = 0;
  let producer = '';
  let opsetVersion = 0;
  const metadataProps: { key: string; value: string }[] = [];
  r.fields((f) => {
    switch (f) {
      case 1: irVersion = r.int(); return true;
      case 2: producer = r.string(); return true;
      case 7: graph = readGraph(r.lengthDelimited()); return true;
      case 8: {
        const op = r.lengthDelimited();
        let domain = '';
        let version = 0;
        op.fields((of) => {
          if (of === 1) domain = op.string();
          else if (of === 2) version = op.int();
          else return false;
          return true;
        });
        if (domain === '' || domain === 'ai.onnx') opsetVersion = version;
        return true;
      }
      case 14: {
        const e = r.lengthDelimited();
        const entry = { key: '', value: '' };
        e.fields((ef) => {
          if (ef === 1) entry.key = e.string();
          else if (ef === 2) entry.value = e.string();
          else return false;
          return true;
        });
        metadataProps.push(entry);
        return true;
      }
      default: return false;
    }
  });
  if (!graph) throw new Error('not an ONNX model: no graph found');
  return { irVersion, opsetVersion, producer, graph, metadataProps };
}
