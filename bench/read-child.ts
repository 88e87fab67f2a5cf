// One measurement of reading a whole file into memory, in a process of its own
// so that its peak memory is its own. Prints one JSON line.
//   mode "readFile": Node's fs.promises.readFile (the baseline)
//   mode "load":     the Disk storage with need_load_file: true
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { Storage } from "../src/index.js"
import * as NodeStorage from "../src/NodeStorage.js"
import { peakRss, resetPeak } from "./memory.js"

const [mode, file] = process.argv.slice(2) as [string, string]
const gc = () => Effect.runSync(NodeStorage.garbageCollector.collect)

gc()
resetPeak()
const rssBefore = process.memoryUsage().rss
let ms = 0
let checksum = 0
let rssAfterRelease: number | undefined

if (mode === "readFile") {
  const start = performance.now()
  const bytes = await fs.promises.readFile(file)
  ms = performance.now() - start
  checksum = bytes[bytes.length - 1]! + bytes.length
} else {
  const program = Effect.gen(function*() {
    const storage = yield* Storage.Storage
    yield* Effect.scoped(Effect.gen(function*() {
      const start = performance.now()
      const [loaded] = yield* storage.load
      ms = performance.now() - start
      const bytes = loaded!._tag === "Bytes" ? loaded!.bytes : new Uint8Array(1)
      checksum = bytes[bytes.length - 1]! + bytes.length
    }))
    // The scope closed: the finalizer released the bytes and ran the collector.
    rssAfterRelease = process.memoryUsage().rss
  })
  await Effect.runPromise(Effect.provide(program, NodeStorage.layerDisk({ pathToFiles: file, fileMask: ".", needLoadFile: true })))
}

const peak = peakRss()
console.log(JSON.stringify({ mode, ms, checksum, rssBefore, peakExtra: peak - rssBefore, afterRelease: rssAfterRelease === undefined ? null : rssAfterRelease - rssBefore }))
