import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Fiber from "effect/Fiber"
import * as Duration from "effect/Duration"
const N = 20000
const time = async (name, eff) => { for (let k = 0; k < 3; k++) { const t = performance.now(); await Effect.runPromise(Effect.forEach(Array.from({length:N},(_, i)=>i), () => eff, { concurrency: 8, discard: true })); if (k==2) console.log(name.padEnd(40), ((performance.now()-t)/N*1000).toFixed(1), "us/op") } }
await time("forEach conc8 of Effect.void", Effect.void)
await time("scoped acquireRelease", Effect.scoped(Effect.acquireRelease(Effect.sync(()=>1), () => Effect.void)))
await time("async (setImmediate)", Effect.async((r) => { setImmediate(() => r(Effect.void)) }))
await time("fork+interrupt repeat", Effect.flatMap(Effect.fork(Effect.interruptible(Effect.repeat(Effect.void, Schedule.spaced(Duration.millis(100))))), (f) => Fiber.interrupt(f)))
await time("fork+interruptFork+forkDaemon", Effect.flatMap(Effect.fork(Effect.interruptible(Effect.repeat(Effect.void, Schedule.spaced(Duration.millis(100))))), (f) => Effect.zipRight(Fiber.interruptFork(f), Effect.forkDaemon(Effect.void))))
await time("retry schedule (success)", Effect.retry(Effect.void, Schedule.recurs(5)))
await time("gen with 10 yields", Effect.gen(function*(){ for (let i=0;i<10;i++) yield* Effect.sync(()=>i) }))
await time("uninterruptibleMask", Effect.uninterruptibleMask((r) => r(Effect.void)))
await time("makeSemaphore+withPermits", Effect.flatMap(Effect.makeSemaphore(1), (s) => s.withPermits(1)(Effect.void)))
await time("timeoutFail", Effect.timeoutFail(Effect.void, { duration: Duration.seconds(5), onTimeout: () => 1 }))
await time("Effect.try sync", Effect.try(() => 1))
