/**
 * The demo (npm run demo): loads the bundled ONNX model through the Disk
 * storage, once by path (need_load_file: false) and once with its bytes read
 * into memory (need_load_file: true), deserializes it with onnxruntime-node,
 * runs one prediction, checks it against the same network computed in plain
 * TypeScript, and prints the process's memory before the load, after
 * deserialization, and after the scope of the load closed.
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as ort from "onnxruntime-node"
import * as path from "node:path"
import { LoadedFile, Storage } from "../src/index.js"
import * as NodeStorage from "../src/NodeStorage.js"
import { demoMlp, predict } from "./onnx.js"

const modelFolder = path.join(import.meta.dirname, "model")
const MiB = 1024 * 1024

const memory = (label: string) =>
  Effect.sync(() => {
    const { arrayBuffers, heapUsed, rss } = process.memoryUsage()
    const mib = (n: number) => `${(n / MiB).toFixed(1).padStart(6)} MiB`
    return `  ${label.padEnd(28)} rss ${mib(rss)}   heap ${mib(heapUsed)}   array buffers ${mib(arrayBuffers)}`
  }).pipe(Effect.flatMap(Console.log))

// The "binarizer": one LoadedFile in, an inference session out.
const deserialize = (file: LoadedFile.LoadedFile) =>
  Effect.promise(() =>
    LoadedFile.match(file, {
      Model: ({ model }) => Promise.resolve(model as ort.InferenceSession),
      Path: ({ path }) => ort.InferenceSession.create(path),
      Bytes: ({ bytes }) => ort.InferenceSession.create(bytes)
    })
  )

const input = Float32Array.from({ length: 1024 }, (_, i) => Math.sin(i / 7))
const expected = predict(demoMlp(), input)

const run = (needLoadFile: boolean) =>
  Effect.gen(function*() {
    yield* Console.log(`\nneed_load_file: ${needLoadFile}`)
    const storage = yield* Storage.Storage
    yield* NodeStorage.garbageCollector.collect
    yield* memory("before load")
    let loaded: LoadedFile.LoadedFile | undefined
    const session = yield* Effect.scoped(Effect.gen(function*() {
      const [file] = yield* storage.load
      loaded = file
      yield* Console.log(`  loaded ${file!._tag}: ${file!._tag === "Model" ? "" : `${file!.name}, ${file!.size} bytes`}`)
      const session = yield* deserialize(file!)
      yield* memory("after deserialization")
      return session
    }))
    yield* memory("after the scope closed")
    if (loaded?._tag === "Bytes") yield* Console.log(`  raw bytes released: ${loaded.released}`)
    const output = yield* Effect.promise(() => session.run({ x: new ort.Tensor("float32", input, [1, input.length]) }))
    const probabilities = output["probabilities"]!.data as Float32Array
    const best = probabilities.indexOf(Math.max(...probabilities))
    const error = Math.max(...probabilities.map((p, i) => Math.abs(p - expected[i]!)))
    yield* Console.log(
      `  prediction: class ${best} with p=${probabilities[best]!.toFixed(4)} ` +
        `(max difference from the TypeScript reference: ${error.toExponential(1)})`
    )
    if (error > 1e-4) return yield* Effect.dieMessage("the prediction does not match the reference")
    yield* Effect.promise(() => session.release())
  }).pipe(
    Effect.provide(NodeStorage.layerFromSelection({
      storage_type: "mlup.ml.storage.local_disk.DiskStorage",
      storage_kwargs: { path_to_files: modelFolder, file_mask: String.raw`\.onnx$`, need_load_file: needLoadFile }
    }))
  )

const main = Effect.gen(function*() {
  yield* Console.log(`mlup-storage demo: ${path.relative(process.cwd(), modelFolder)}/mlp.onnx through the Disk storage`)
  yield* run(false)
  yield* run(true)
})

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exit(1)
})
