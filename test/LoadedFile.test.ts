import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as path from "node:path"
import * as mask from "../src/internal/mask.js"
import * as LoadedFile from "../src/LoadedFile.js"
import { tempDir } from "./helpers.js"
import * as Data from "effect/Data"
import * as Equal from "effect/Equal"
import * as Hash from "effect/Hash"
import * as HashSet from "effect/HashSet"
import * as util from "node:util"

describe("LoadedFile", () => {
  it("match branches on the kind of file, with full types", () => {
    const describe = LoadedFile.match({
      Model: ({ model }) => `model ${String(model)}`,
      Path: ({ path, size }) => `path ${path} ${size}`,
      Bytes: ({ name, size }) => `bytes ${name} ${size}`
    })
    expect(describe(LoadedFile.model("m"))).toBe("model m")
    expect(describe(LoadedFile.path({ path: "/a/b.onnx", name: "b.onnx", size: 3 }))).toBe("path /a/b.onnx 3")
    expect(LoadedFile.match(LoadedFile.model(1), { Model: () => 1, Path: () => 2, Bytes: () => 3 })).toBe(1)
    expect(LoadedFile.isLoadedFile(LoadedFile.model(null))).toBe(true)
    expect(LoadedFile.isLoadedFile({ _tag: "Model" })).toBe(false)
  })

  it.effect("bytes are released with their scope, and a pooled slab is never detached", () =>
    Effect.gen(function*() {
      // Two small Buffers from the same 8 KiB pool: they share one ArrayBuffer.
      const pooled = Buffer.from("model bytes")
      const neighbour = Buffer.from("someone else's bytes")
      expect(pooled.buffer).toBe(neighbour.buffer)
      const owned = new Uint8Array(1024).fill(7)
      const [a, b] = yield* Effect.scoped(Effect.all([
        LoadedFile.bytes({ path: "/p", name: "p", bytes: pooled }),
        LoadedFile.bytes({ path: "/o", name: "o", bytes: owned })
      ]))
      expect(a.released && b.released).toBe(true)
      expect(() => a.bytes).toThrow(/were released when the scope of their load closed/)
      // The pool is intact: the neighbour still reads its bytes.
      expect(neighbour.toString()).toBe("someone else's bytes")
      expect(pooled.toString()).toBe("model bytes")
      // The owned buffer was detached.
      expect(owned.byteLength).toBe(0)
      expect(JSON.stringify(a)).toBe(JSON.stringify({ _tag: "Bytes", path: "/p", name: "p", size: 11, released: true }))
    }))

  it.scoped("bytes from fs.readFileSync of a small file stay usable by their other owners", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "small"), "tiny")
      const small = fs.readFileSync(path.join(dir, "small"))
      const other = Buffer.from("x")
      yield* Effect.scoped(LoadedFile.bytes({ path: "/s", name: "s", bytes: small }))
      expect(small.toString()).toBe("tiny")
      expect(other.toString()).toBe("x")
    }))
})

describe("masks (Python re syntax)", () => {
  const test = (source: string, name: string) => Either.getOrThrow(mask.compile(source)).test(name)

  it("mlup's default mask behaves as in Python: searched, so any '?pckl' matches", () => {
    expect(test(mask.defaultMask, "model.pckl")).toBe(true)
    expect(test(mask.defaultMask, "pckl")).toBe(false)
    expect(test(mask.defaultMask, "model_pckl.onnx")).toBe(true)
    expect(test(mask.defaultMask, "model.onnx")).toBe(false)
  })

  it("translates the Python-only forms", () => {
    expect(test(String.raw`\Amodel\.pckl\Z`, "model.pckl")).toBe(true)
    expect(test(String.raw`\Amodel\.pckl\Z`, "my_model.pckl")).toBe(false)
    expect(test(String.raw`(?P<v>\d+)-(?P=v)\.bin`, "12-12.bin")).toBe(true)
    expect(test(String.raw`(?P<v>\d+)-(?P=v)\.bin`, "12-13.bin")).toBe(false)
    expect(test("(?i)MODEL", "model.onnx")).toBe(true)
    expect(test("(?s)a.b", "a\nb")).toBe(true)
    expect(test(String.raw`[]a]`, "]")).toBe(true)
    expect(test(String.raw`\\A`, "\\A")).toBe(true)
  })

  it("reports what it cannot compile", () => {
    expect(Either.isLeft(mask.compile("("))).toBe(true)
    expect(mask.compile("(?x)a b")).toEqual(Either.left("uses the verbose flag (?x), which is not supported"))
    // Python refuses \Z inside a class (a bad escape): so does this library.
    expect(Either.isLeft(mask.compile(String.raw`[\Z]`))).toBe(true)
    expect(Either.isLeft(mask.compile("(?P=name"))).toBe(true)
  })
})

describe("LoadedFile as Effect data", () => {
  it.scoped("files compare with Equal and hash alike; they print readably", () =>
    Effect.gen(function*() {
      const a = LoadedFile.path({ path: "/models/model.onnx", name: "model.onnx", size: 1_234_567 })
      const same = LoadedFile.path({ path: "/models/model.onnx", name: "model.onnx", size: 1_234_567 })
      const other = LoadedFile.path({ path: "/models/model.onnx", name: "model.onnx", size: 7 })
      expect(Equal.equals(a, same)).toBe(true)
      expect(Hash.hash(a)).toBe(Hash.hash(same))
      expect(Equal.equals(a, other)).toBe(false)
      expect(HashSet.size(HashSet.make(a, same, other))).toBe(2)
      expect(Equal.equals(LoadedFile.model(Data.struct({ w: 1 })), LoadedFile.model(Data.struct({ w: 1 })))).toBe(true)
      expect(Equal.equals(LoadedFile.model({ w: 1 }), LoadedFile.model({ w: 1 }))).toBe(false)

      const bytes = yield* LoadedFile.bytes({ path: "/models/model.onnx", name: "model.onnx", bytes: new Uint8Array(1_234_567) })
      expect(Equal.equals(bytes, a)).toBe(false)
      // Bytes compare by identity: the same path, name and size with other contents is another value.
      const zeros = yield* LoadedFile.bytes({ path: "/m.bin", name: "m.bin", bytes: new Uint8Array([0, 0, 0]) })
      const ones = yield* LoadedFile.bytes({ path: "/m.bin", name: "m.bin", bytes: new Uint8Array([1, 1, 1]) })
      expect(Equal.equals(zeros, ones)).toBe(false)
      expect(Equal.equals(zeros, zeros)).toBe(true)
      expect(HashSet.size(HashSet.make(zeros, ones, zeros))).toBe(2)
      expect(String(a)).toBe("Path(model.onnx, 1.2 MB, /models/model.onnx)")
      expect(String(bytes)).toBe("Bytes(model.onnx, 1.2 MB)")
      expect(util.inspect(bytes)).toBe("Bytes(model.onnx, 1.2 MB)")
      expect(util.inspect([a])).toBe("[ Path(model.onnx, 1.2 MB, /models/model.onnx) ]")
      expect(String(LoadedFile.model({ layers: 3 }))).toBe("Model({ \"layers\": 3 })")
    }))
})
