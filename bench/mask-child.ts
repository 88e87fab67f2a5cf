// Finding one file by mask in a large folder, timed in-process (no start-up
// cost), median of several rounds. Prints one JSON line.
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DiskStorage, Storage } from "../src/index.js"
import * as NodeStorage from "../src/NodeStorage.js"

const [folder, mask, rounds] = process.argv.slice(2) as [string, string, string]

// As a Node application wires it: Node's file system and its real collector.
const layer = DiskStorage.layer({ pathToFiles: folder, fileMask: mask }).pipe(Layer.provide(NodeStorage.layer))

const program = Effect.gen(function*() {
  const storage = yield* Storage.Storage
  const times: Array<number> = []
  let found = 0
  for (let i = 0; i < Number(rounds); i++) {
    const start = performance.now()
    found = yield* Effect.scoped(Effect.map(storage.load, (files) => files.length))
    times.push(performance.now() - start)
  }
  times.sort((a, b) => a - b)
  return { found, medianMs: times[Math.floor(times.length / 2)]! }
})

Effect.runPromise(Effect.provide(program, layer)).then((result) => console.log(JSON.stringify(result)))
