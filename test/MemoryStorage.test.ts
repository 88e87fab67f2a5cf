import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as MemoryStorage from "../src/MemoryStorage.js"
import * as Storage from "../src/Storage.js"
import * as NodeStorage from "../src/NodeStorage.js"
import { storageContract } from "../src/Testing.js"

const model = { predict: (x: number) => 2 * x }

storageContract("MemoryStorage", Effect.succeed({
  layer: MemoryStorage.layer(model),
  expected: [{ _tag: "Model", model }]
}))

describe("MemoryStorage", () => {
  it.scoped("hands over the very same object, not a copy", () =>
    Effect.gen(function*() {
      const storage = yield* Storage.Storage
      const [file] = yield* storage.load
      expect(file?._tag === "Model" && file.model).toBe(model)
    }).pipe(Effect.provide(NodeStorage.layerMemory(model))))

  it.effect("is the default storage_type, and needs the model", () =>
    Effect.gen(function*() {
      const storage = yield* Effect.provide(Storage.fromSelection({}, { model }), NodeStorage.layer)
      expect(storage.storageType).toBe("memory")
      const error = yield* Effect.flip(Effect.provide(Storage.fromSelection({}), NodeStorage.layer))
      expect(error._tag).toBe("InvalidStorageOptions")
      expect(error.message).toContain("model: is missing")
    }))
})
