// Typed reads of node attributes, and the errors that name the node convscope cannot import.
import type { NodeProto } from '../../onnx/proto.js';
import { float32Decimal } from './constants.js';

export function intAttr(n: NodeProto, key: string, fallback: number): number {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'int') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be an int`);
  return a.value;
}

export function intsAttr(n: NodeProto, key: string, fallback: number[]): number[] {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'ints') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a list of ints`);
  return a.value;
}

export function floatAttr(n: NodeProto, key: string, fallback: number): number {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind === 'float' || a.kind === 'int') return float32Decimal(a.value);
  throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a float`);
}

export function stringAttr(n: NodeProto, key: string, fallback: string): string {
  const a = n.attributes.get(key);
  if (!a) return fallback;
  if (a.kind !== 'string') throw new Error(`node '${n.name}' (${n.opType}): attribute ${key} must be a string`);
  return a.value;
}

export function refuse(n: NodeProto, why: string): never {
  throw new Error(`${n.opType} node '${n.name}': ${why}`);
}

export function unsupportedOp(n: NodeProto): never {
  throw new Error(`unsupported ONNX op '${n.opType}' at node '${n.name}'`);
}
