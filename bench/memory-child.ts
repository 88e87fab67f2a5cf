// One measurement of loading a remote file straight into memory, in a process
// of its own so that its peak memory is its own. Prints one JSON line.
//   mode "http-memory": the HTTP storage, cache: false, need_load_file: true
//   mode "s3-memory":   the S3 storage, cache: false, need_load_file: true
//   mode "sdk-buffer":  the AWS SDK's GetObject into a buffer (transformToByteArray)
//   mode "budget":      four loads of the URL at once (HTTP, cache: false) under
//                       a MemoryBudget of `budgetMiB`; each holds its bytes
//                       for 200 ms (a deserializer), then lets them go
//   mode "no-budget":   the same four loads without a budget
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { MemoryBudget, Storage, type StorageError } from "../src/index.js"
import * as NodeStorage from "../src/NodeStorage.js"
import { peakRss, resetPeak } from "./memory.js"

const [mode, source, budgetMiB] = process.argv.slice(2) as [string, string, string | undefined]
const keys = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }
const MiB = 1024 * 1024
const gc = () => Effect.runSync(NodeStorage.garbageCollector.collect)

// One load in its own scope: its bytes (checked by their size) are released when it closes.
const loadOnce = (layer: Layer.Layer<Storage.Storage, StorageError.StorageError>, holdMs = 0) =>
  Effect.gen(function*() {
    const storage = yield* Storage.Storage
    return yield* Effect.scoped(Effect.gen(function*() {
      const files = yield* storage.load
      yield* Effect.sleep(holdMs)
      return files.reduce((sum, file) => sum + (file._tag === "Bytes" ? file.bytes.byteLength : 0), 0)
    }))
  }).pipe(Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Warning))

await import("../src/internal/s3.js")
const client = new S3Client({ endpoint: source, region: "us-east-1", forcePathStyle: true, credentials: keys, maxAttempts: 1 })
const httpLayer = NodeStorage.layerHttp({ urls: source, needLoadFile: true, cache: false })
const s3Layer = NodeStorage.layerS3({
  bucket: "bench",
  prefix: "model.bin",
  fileMask: ".",
  endpoint: source,
  ...keys,
  needLoadFile: true,
  cache: false
})
gc()
resetPeak()
const rssBefore = process.memoryUsage().rss
const start = performance.now()
let bytes = 0
if (mode === "sdk-buffer") {
  const output = await client.send(new GetObjectCommand({ Bucket: "bench", Key: "model.bin" }))
  const body = await output.Body!.transformToByteArray()
  bytes = body.byteLength
} else if (mode === "budget" || mode === "no-budget") {
  const four = Effect.forEach([0, 1, 2, 3], () => loadOnce(httpLayer, 200), { concurrency: "unbounded" })
  const sizes = await Effect.runPromise(
    mode === "budget" ? four.pipe(Effect.provide(MemoryBudget.layer({ bytes: Number(budgetMiB) * MiB }))) : four
  )
  bytes = sizes.reduce((sum, size) => sum + size, 0)
} else {
  bytes = await Effect.runPromise(loadOnce(mode === "s3-memory" ? s3Layer : httpLayer))
}
const ms = performance.now() - start
const peak = peakRss()
// The loads' scopes closed (the collector ran): what is left above the start.
gc()
const afterRelease = process.memoryUsage().rss - rssBefore
console.log(JSON.stringify({ mode, ms, bytes, peakExtra: peak - rssBefore, afterRelease }))
client.destroy()
