// One measurement of fetching a remote file to the local disk, in a process of
// its own so that its peak memory is its own. Prints one JSON line.
//   mode "http": the HTTP storage (need_load_file: false), into a fresh cache
//   mode "s3":   the S3 storage (need_load_file: false), into a fresh cache
//   mode "sdk":  the AWS SDK's GetObject piped into a file (the S3 baseline)
//   mode "node": plain Node doing the HTTP storage's work without it: node:http's
//                response piped into a file, hashed with sha256 on the way
//   mode "s3-many":  the S3 storage, every key under many/ into a fresh cache
//   mode "sdk-many": the AWS SDK: ListObjectsV2 (paged) under many/, then 8
//                    GetObjects at once, each piped into a file (the baseline)
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import type { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import * as http from "node:http"
import type * as Layer from "effect/Layer"
import { Storage, type StorageError } from "../src/index.js"
import * as NodeStorage from "../src/NodeStorage.js"
import { peakRss, resetPeak } from "./memory.js"

const [mode, source, target] = process.argv.slice(2) as [string, string, string]
const keys = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }

const viaStorage = (layer: Layer.Layer<Storage.Storage, StorageError.StorageError>) =>
  Effect.runPromise(Effect.gen(function*() {
    const storage = yield* Storage.Storage
    return yield* Effect.scoped(Effect.map(storage.load, (files) => files.map((file) => (file._tag === "Path" ? file.size : 0))))
  }).pipe(Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Warning)))

// Everything is imported and set up before the baseline is read (the S3
// storage imports the AWS SDK when it is made: here, beforehand).
await import("../src/internal/s3.js")
const client = new S3Client({ endpoint: source, region: "us-east-1", forcePathStyle: true, credentials: keys, maxAttempts: 1 })
const layer = mode === "http"
  ? NodeStorage.layerHttp({ urls: source, cacheDir: target })
  : mode === "s3-many"
  ? NodeStorage.layerS3({ bucket: "bench", prefix: "many/", fileMask: ".", endpoint: source, ...keys, cacheDir: target })
  : NodeStorage.layerS3({ bucket: "bench", prefix: "model.bin", fileMask: ".", endpoint: source, ...keys, cacheDir: target })
resetPeak()
const rssBefore = process.memoryUsage().rss
const cpuBefore = process.cpuUsage()
const start = performance.now()
let bytes = 0
if (mode === "node") {
  const response = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get(source, resolve).on("error", reject)
  )
  const hash = crypto.createHash("sha256")
  response.on("data", (chunk: Buffer) => hash.update(chunk))
  await pipeline(response, fs.createWriteStream(target, { highWaterMark: 1024 * 1024 }))
  hash.digest("hex")
  bytes = fs.statSync(target).size
} else if (mode === "sdk") {
  const output = await client.send(new GetObjectCommand({ Bucket: "bench", Key: "model.bin" }))
  await pipeline(output.Body as Readable, fs.createWriteStream(target))
  bytes = fs.statSync(target).size
} else if (mode === "sdk-many") {
  fs.mkdirSync(target, { recursive: true })
  const keysFound: Array<string> = []
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: "bench", Prefix: "many/", ContinuationToken: token }))
    for (const object of page.Contents ?? []) keysFound.push(object.Key!)
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined
  } while (token !== undefined)
  let next = 0
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < keysFound.length) {
      const key = keysFound[next++]!
      const output = await client.send(new GetObjectCommand({ Bucket: "bench", Key: key }))
      const file = `${target}/${key.replace(/\//g, "_")}`
      await pipeline(output.Body as Readable, fs.createWriteStream(file))
      bytes += fs.statSync(file).size
    }
  }))
} else {
  bytes = (await viaStorage(layer)).reduce((sum, size) => sum + size, 0)
}
const ms = performance.now() - start
const peak = peakRss()
// CPU time of the whole process over the transfer (every thread: the event loop, workers, the collector).
const cpuUsed = process.cpuUsage(cpuBefore)
const cpu = (cpuUsed.user + cpuUsed.system) / 1e6
console.log(JSON.stringify({ mode, ms, bytes, cpu, peakExtra: peak - rssBefore }))
client.destroy()
