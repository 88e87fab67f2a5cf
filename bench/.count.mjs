import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Supervisor from "effect/Supervisor"
import { Storage } from "../dist/index.js"
import * as NodeStorage from "../dist/NodeStorage.js"
const n = Number(process.argv[2] ?? 200)
const urls = Array.from({length:n},(_,i)=>`http://127.0.0.1:28080/many/f${String(i).padStart(5,"0")}.bin`)
const cacheDir = process.argv[3] ?? "/dev/shm/pwcache3"
let started = 0
class Counter extends Supervisor.AbstractSupervisor { get value() { return Effect.succeed(started) } onStart() { started++ } }
const layer = NodeStorage.layerHttp({ urls, cacheDir })
const r = await Effect.runPromise(Effect.gen(function*() {
  const storage = yield* Storage.Storage
  return yield* Effect.scoped(storage.load)
}).pipe(Effect.supervised(new Counter()), Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Warning)))
console.error("files", r.length, "fibers", started, "per file", (started/n).toFixed(1))
