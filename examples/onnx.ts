/**
 * The demo's model: a small multi-layer perceptron written as an ONNX file by a
 * minimal protobuf encoder (no Python, no download), and the same network
 * computed in plain TypeScript, to check what onnxruntime predicts.
 *
 *   probabilities = softmax(relu(x · W1 + b1) · W2 + b2)
 */

export interface Mlp {
  readonly inputs: number
  readonly hidden: number
  readonly classes: number
  readonly w1: Float32Array
  readonly b1: Float32Array
  readonly w2: Float32Array
  readonly b2: Float32Array
}

/** Deterministic weights (xorshift32), scaled so activations stay small. */
export const makeMlp = (inputs: number, hidden: number, classes: number, seed = 2024): Mlp => {
  let state = seed
  const next = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return ((state >>> 0) / 0xffffffff - 0.5) * 2
  }
  const fill = (length: number, scale: number) => Float32Array.from({ length }, () => next() * scale)
  return {
    inputs,
    hidden,
    classes,
    w1: fill(inputs * hidden, 1 / Math.sqrt(inputs)),
    b1: fill(hidden, 0.1),
    w2: fill(hidden * classes, 1 / Math.sqrt(hidden)),
    b2: fill(classes, 0.1)
  }
}

/** The network's forward pass, in plain TypeScript. */
export const predict = (mlp: Mlp, x: Float32Array): Float32Array => {
  const hidden = new Float64Array(mlp.hidden)
  for (let j = 0; j < mlp.hidden; j++) hidden[j] = mlp.b1[j]!
  for (let i = 0; i < mlp.inputs; i++) {
    const xi = x[i]!
    const row = i * mlp.hidden
    for (let j = 0; j < mlp.hidden; j++) hidden[j]! += xi * mlp.w1[row + j]!
  }
  const logits = new Float64Array(mlp.classes)
  for (let k = 0; k < mlp.classes; k++) logits[k] = mlp.b2[k]!
  for (let j = 0; j < mlp.hidden; j++) {
    const h = Math.max(0, hidden[j]!)
    for (let k = 0; k < mlp.classes; k++) logits[k]! += h * mlp.w2[j * mlp.classes + k]!
  }
  const max = Math.max(...logits)
  const exp = logits.map((v) => Math.exp(v - max))
  const sum = exp.reduce((a, b) => a + b, 0)
  return Float32Array.from(exp, (v) => v / sum)
}

// --- a minimal protobuf writer, enough for onnx.proto's ModelProto ---

const varint = (value: number): Array<number> => {
  const out: Array<number> = []
  let v = value
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return out
}

type Field = Uint8Array

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.byteLength
  }
  return out
}

const int = (field: number, value: number): Field => Uint8Array.from([...varint(field << 3), ...varint(value)])
const bytes = (field: number, value: Uint8Array): Field =>
  concat([Uint8Array.from([...varint((field << 3) | 2), ...varint(value.byteLength)]), value])
const str = (field: number, value: string): Field => bytes(field, new TextEncoder().encode(value))
const message = (field: number, ...fields: ReadonlyArray<Field>): Field => bytes(field, concat(fields))

const FLOAT = 1

const tensor = (name: string, dims: ReadonlyArray<number>, data: Float32Array): Field =>
  message(
    5, // GraphProto.initializer
    ...dims.map((d) => int(1, d)), // TensorProto.dims
    int(2, FLOAT), // TensorProto.data_type
    str(8, name), // TensorProto.name
    bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) // TensorProto.raw_data (little-endian)
  )

const valueInfo = (field: number, name: string, dims: ReadonlyArray<number>): Field =>
  message(
    field,
    str(1, name), // ValueInfoProto.name
    message(
      2, // ValueInfoProto.type
      message(
        1, // TypeProto.tensor_type
        int(1, FLOAT), // elem_type
        message(2, ...dims.map((d) => message(1, int(1, d)))) // shape.dim[].dim_value
      )
    )
  )

const node = (op: string, inputs: ReadonlyArray<string>, output: string): Field =>
  message(1, ...inputs.map((i) => str(1, i)), str(2, output), str(3, `${op}_${output}`), str(4, op))

/** The network as an ONNX model (IR version 8, opset 13). */
export const toOnnx = (mlp: Mlp): Uint8Array => {
  const graph = message(
    7, // ModelProto.graph
    node("MatMul", ["x", "W1"], "h1"),
    node("Add", ["h1", "b1"], "h2"),
    node("Relu", ["h2"], "h3"),
    node("MatMul", ["h3", "W2"], "o1"),
    node("Add", ["o1", "b2"], "logits"),
    node("Softmax", ["logits"], "probabilities"),
    str(2, "mlup_storage_demo_mlp"),
    tensor("W1", [mlp.inputs, mlp.hidden], mlp.w1),
    tensor("b1", [mlp.hidden], mlp.b1),
    tensor("W2", [mlp.hidden, mlp.classes], mlp.w2),
    tensor("b2", [mlp.classes], mlp.b2),
    valueInfo(11, "x", [1, mlp.inputs]),
    valueInfo(12, "probabilities", [1, mlp.classes])
  )
  return concat([
    int(1, 8), // ir_version
    str(2, "mlup-storage"), // producer_name
    graph,
    message(8, str(1, ""), int(2, 13)) // opset_import: default domain, version 13
  ])
}

/** The demo model's shape: 1024 inputs, 4096 hidden units (16 MiB of weights), 10 classes. */
export const demoMlp = (): Mlp => makeMlp(1024, 4096, 10)
