import * as Effect from "effect/Effect"
const prog = Effect.gen(function*() { let x = 0; for (let i = 0; i < 300000; i++) x += yield* Effect.sync(() => 1); return x })
for (let k = 0; k < 3; k++) { const t = performance.now(); await Effect.runPromise(prog); console.log("300k gen-yields ms", (performance.now()-t).toFixed(0)) }
const scoped = Effect.scoped(Effect.gen(function*() { yield* Effect.acquireRelease(Effect.sync(()=>1), () => Effect.void); return 1 }))
const p2 = Effect.forEach(Array.from({length:20000},(_, i)=>i), () => scoped, { concurrency: 8, discard: true })
for (let k = 0; k < 3; k++) { const t = performance.now(); await Effect.runPromise(p2); console.log("20k scoped acquireRelease x8 conc ms", (performance.now()-t).toFixed(0)) }
