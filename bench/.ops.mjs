import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Supervisor from "effect/Supervisor"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import { Storage } from "../dist/index.js"
import * as NodeStorage from "../dist/NodeStorage.js"
const n = Number(process.argv[2] ?? 200)
const urls = Array.from({length:n},(_,i)=>`http://127.0.0.1:28080/many/f${String(i).padStart(5,"0")}.bin`)
const cacheDir = process.argv[3] ?? "/dev/shm/pwcache3"
let ops = 0; const byOp = new Map(); const byFn = new Map()
const fnKey = (f) => { if (typeof f !== "function") return "?"; const s = f.toString().replace(/\s+/g," "); return s.slice(0,110) }
class Counter extends Supervisor.AbstractSupervisor { get value() { return Effect.succeed(ops) }
  onEffect(fiber, op) { ops++; byOp.set(op._op,(byOp.get(op._op)||0)+1)
    const f = op._op==="Sync"?op.effect_instruction_i0:op._op==="OnSuccess"||op._op==="OnSuccessAndFailure"?op.effect_instruction_i1:op._op==="Commit"?op.commit:op._op==="Async"?op.effect_instruction_i0:undefined
    if (f) { const k = op._op+" "+fnKey(f); byFn.set(k,(byFn.get(k)||0)+1) } } }
const layer = NodeStorage.layerHttp({ urls, cacheDir })
const r = await Effect.runPromise(Effect.gen(function*() {
  const storage = yield* Storage.Storage
  return yield* Effect.scoped(storage.load)
}).pipe(Effect.supervised(new Counter()), Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)), Effect.provide(layer), Logger.withMinimumLogLevel(LogLevel.Warning)))
console.log("files", r.length, "ops", ops, "per file", (ops/n).toFixed(0))
console.log([...byOp].sort((a,b)=>b[1]-a[1]).map(([k,v])=>`${k}:${(v/n).toFixed(0)}`).join(" "))
for (const [k,v] of [...byFn].sort((a,b)=>b[1]-a[1]).slice(0,Number(process.argv[4]??60))) console.log(String((v/n).toFixed(1)).padStart(7), k)
