import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { Storage } from "../dist/index.js"
import * as NodeStorage from "../dist/NodeStorage.js"
import * as fs from "node:fs"
const n = Number(process.argv[2] ?? 2000)
const urls = Array.from({length:n},(_,i)=>`http://127.0.0.1:28080/many/f${String(i).padStart(5,"0")}.bin`)
const cacheDir = process.argv[3] ?? "/dev/shm/pwcache2"
const layer = NodeStorage.layerHttp({ urls, cacheDir, ...(process.env.CONC ? { concurrency: Number(process.env.CONC) } : {}) })
const t = performance.now()
const r = await Effect.runPromise(Effect.gen(function*() {
  const storage = yield* Storage.Storage
  return yield* Effect.scoped(storage.load)
}).pipe(process.env.NOTRACE ? Effect.withTracerEnabled(false) : (x)=>x, Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Warning)))
console.error("files", r.length, "ms", (performance.now()-t).toFixed(0), "cpu", JSON.stringify(process.cpuUsage()))
