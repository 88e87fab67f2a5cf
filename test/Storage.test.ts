import { describe, expect, it, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DiskStorage from "../src/DiskStorage.js"
import * as GarbageCollector from "../src/GarbageCollector.js"
import * as LoadedFile from "../src/LoadedFile.js"
import * as MemoryBudget from "../src/MemoryBudget.js"
import * as MemoryStorage from "../src/MemoryStorage.js"
import * as Storage from "../src/Storage.js"
import * as StorageError from "../src/StorageError.js"
import { storageContract } from "../src/Testing.js"
import { greetings } from "./fixtures/custom-storage.js"
import { openDescriptors, platform, tempDir, writeFiles } from "./helpers.js"
import { onItsOwnClock, sleepingBetween } from "./watching.js"
import { demoMlp, makeMlp, predict, toOnnx } from "../examples/onnx.js"

const root = path.resolve(import.meta.dirname, "..")

const fromSelection = (selection: Storage.Selection, options?: Storage.SelectionOptions) =>
  Effect.provide(Storage.fromSelection(selection, options), platform)

const fromEnv = (env: Record<string, string>, options?: Storage.ConfigOptions) =>
  Storage.fromConfig(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" })),
    Effect.provide(platform)
  )

const names = (storage: Storage.Service) =>
  Effect.scoped(Effect.map(storage.load, (files) => files.map((file) => (file._tag === "Model" ? "(model)" : file.name))))

describe("selection by storage_type / storage_kwargs", () => {
  it.scoped("short names and mlup's full names select the built-in storages", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "m.pckl": "x" })
      for (const storage_type of ["disk", "mlup.ml.storage.local_disk.DiskStorage"]) {
        const storage = yield* fromSelection({ storage_type, storage_kwargs: { path_to_files: dir } })
        expect(storage.storageType).toBe("disk")
        expect(yield* names(storage)).toEqual(["m.pckl"])
      }
      for (const storage_type of ["memory", "mlup.ml.storage.memory.MemoryStorage"]) {
        const storage = yield* fromSelection({ storage_type, storage_kwargs: { model: 42 } })
        expect(storage.storageType).toBe("memory")
      }
    }))

  it.scoped("mlup's files_mask spelling is accepted; both spellings must agree", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.onnx": "1", "b.pt": "2" })
      const byFilesMask = yield* fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: dir, files_mask: "onnx" } })
      expect(yield* names(byFilesMask)).toEqual(["a.onnx"])
      const both = yield* fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: dir, file_mask: "pt", files_mask: "pt" } })
      expect(yield* names(both)).toEqual(["b.pt"])
      const error = yield* Effect.flip(fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: dir, file_mask: "pt", files_mask: "onnx" } }))
      expect(error._tag).toBe("InvalidStorageOptions")
      if (error._tag !== "InvalidStorageOptions") return
      expect(error.issues.map((issue) => issue.field)).toEqual(["files_mask"])
      expect(error.issues[0]!.problem).toContain("conflicts with file_mask")
    }))

  it.effect("every bad input is a typed error naming the field and the problem", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromSelection({
        storage_type: "disk",
        storage_kwargs: { file_mask: "(unclosed", need_load_file: "maybe", path_to_file: "/typo" }
      }))
      expect(error).toBeInstanceOf(StorageError.InvalidStorageOptions)
      if (error._tag !== "InvalidStorageOptions") return
      expect(error.storageType).toBe("disk")
      const byField = Object.fromEntries(error.issues.map((issue) => [issue.field, issue.problem]))
      expect(Object.keys(byField).sort()).toEqual(["file_mask", "need_load_file", "path_to_file", "path_to_files"])
      expect(byField["path_to_files"]).toContain("is missing")
      expect(byField["file_mask"]).toContain("is not a valid regular expression")
      expect(byField["need_load_file"]).toBe("must be true or false (a boolean, or the text \"true\" / \"false\")")
      expect(byField["path_to_file"]).toContain("is unexpected")
      expect(error.message).toContain(`Invalid options for storage "disk"`)

      const empty = yield* Effect.flip(fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: "" } }))
      expect(empty.message).toContain("path_to_files: must not be empty")
      const wrongType = yield* Effect.flip(fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: 7 } }))
      expect(wrongType.message).toContain("path_to_files: Expected string, got a value of type number")
      const notAnObject = yield* Effect.flip(fromSelection({ storage_type: "disk", storage_kwargs: "path" as any }))
      expect(notAnObject._tag).toBe("InvalidStorageOptions")
    }))

  it.effect("options given in code are validated too", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.provide(DiskStorage.make({ pathToFiles: "", fileMask: "[" }), platform))
      expect(error._tag).toBe("InvalidStorageOptions")
      expect(error.issues.map((issue) => issue.field).sort()).toEqual(["fileMask", "pathToFiles"])
    }))

  it.effect("an unknown storage_type is a typed error that lists the known ones", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromSelection({ storage_type: "mlup.ml.storage.s3.S3Storage" }))
      expect(error._tag).toBe("UnknownStorageType")
      if (error._tag !== "UnknownStorageType") return
      expect(error.storageType).toBe("mlup.ml.storage.s3.S3Storage")
      expect(error.known).toEqual(expect.arrayContaining(["memory", "disk", "mlup.ml.storage.local_disk.DiskStorage"]))
      expect(error.message).toContain("Known storage types: memory")
    }))

  it.scoped("a custom storage registered in code", () =>
    Effect.gen(function*() {
      const storage = yield* fromSelection(
        { storage_type: "greetings", storage_kwargs: { greeting: "hi", times: 2, password: "s3cret" } },
        { storages: [greetings] }
      )
      const text = yield* Effect.scoped(Effect.map(storage.load, (files) =>
        files.map((file) => (file._tag === "Bytes" ? new TextDecoder().decode(file.bytes) : ""))
      ))
      expect(text).toEqual(["hi hi"])
    }))

  it.scoped("a custom storage named by module specifier and export", () =>
    Effect.gen(function*() {
      // A module path alone (no "#") is its default export, as the docs say.
      for (const storage_type of ["./test/fixtures/custom-storage.ts#greetings", "./test/fixtures/custom-storage.ts#", path.resolve("test/fixtures/custom-storage.ts#greetings"), "./test/fixtures/custom-storage.ts", path.resolve("test/fixtures/custom-storage.ts")]) {
        const storage = yield* fromSelection({ storage_type, storage_kwargs: { greeting: "hello", password: "pw" } })
        expect(yield* names(storage)).toEqual(["greeting.txt"])
      }
      const missingModule = yield* Effect.flip(fromSelection({ storage_type: "./test/fixtures/nowhere.ts#x" }))
      expect(missingModule._tag).toBe("UnknownStorageType")
      expect(missingModule.message).toContain(`could not import "./test/fixtures/nowhere.ts"`)
      const missingExport = yield* Effect.flip(fromSelection({ storage_type: "./test/fixtures/custom-storage.ts#other" }))
      expect(missingExport.message).toContain(`has no export "other"`)
      const notADefinition = yield* Effect.flip(fromSelection({ storage_type: "./test/fixtures/custom-storage.ts#notADefinition" }))
      expect(notADefinition.message).toContain("is not a storage definition")
    }))

  it("PathNotFound names the option that gave the path only when one did (a custom storage's is its own)", () => {
    expect(new StorageError.PathNotFound({ path: "vault://iris.onnx" }).message).toBe("No file or folder at vault://iris.onnx")
    expect(new StorageError.PathNotFound({ path: "vault://iris.onnx", option: "key" }).message)
      .toBe("No file or folder at vault://iris.onnx: check key")
  })

  it.effect("the Disk storage's missing path says to check path_to_files", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: "/no/such/model.pckl" } }).pipe(
          Effect.flatMap((storage) => Effect.scoped(storage.load))
        )
      )
      expect(error).toMatchObject({ _tag: "PathNotFound", path: "/no/such/model.pckl", option: "path_to_files" })
      expect(error.message).toContain("check path_to_files")
    }))

  it.effect("a secret that fails validation is never printed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromSelection(
        { storage_type: "greetings", storage_kwargs: { greeting: "hi", password: 123456789 } },
        { storages: [greetings] }
      ))
      expect(error.message).toContain("password")
      expect(error.message).not.toContain("123456789")
    }))
})

describe("the remote storages' shared options", () => {
  it.effect("one set of defaults and bounds for every remote storage (no drift between copies)", () =>
    Effect.gen(function*() {
      const shared = [
        "concurrency", "multipart_threshold_mb", "part_size_mb", "part_concurrency", "stall_timeout", "retries",
        "lock_timeout", "verify"
      ] as const
      const minimal = {
        http: { urls: "https://models.example/m.onnx" },
        s3: { bucket: "models" },
        gcs: { bucket: "models" },
        azure: { container: "models" },
        hf: { repo_id: "acme/iris" }
      } as const
      const defaults: Array<Record<string, unknown>> = []
      for (const [storage_type, kwargs] of Object.entries(minimal)) {
        const validated = yield* Storage.validate({ storage_type, storage_kwargs: kwargs })
        const decoded = validated.kwargs as Record<string, unknown>
        defaults.push(Object.fromEntries(shared.map((field) => [field, decoded[field]])))
        // The same bounds: the largest part every store serves, a timeout that must be positive.
        const bounds = yield* Effect.flip(Storage.validate({
          storage_type,
          storage_kwargs: { ...kwargs, part_size_mb: 5121, stall_timeout: 0, lock_timeout: -1 }
        }))
        expect(bounds._tag === "InvalidStorageOptions" && bounds.issues.map((issue) => issue.field).sort(), storage_type)
          .toEqual(["lock_timeout", "part_size_mb", "stall_timeout"])
        expect(bounds.message, storage_type).toContain("must be a number of seconds above 0")
      }
      expect(defaults.every((each) => JSON.stringify(each) === JSON.stringify(defaults[0]))).toBe(true)
      expect(defaults[0]).toEqual({
        concurrency: 8,
        multipart_threshold_mb: 64,
        part_size_mb: 16,
        part_concurrency: 8,
        stall_timeout: 60,
        retries: 5,
        lock_timeout: 1800,
        verify: "changed"
      })
    }).pipe(Effect.provide(platform)))
})

describe("selection from Config", () => {
  it.scoped("STORAGE_TYPE and one variable per field", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.onnx": "1", "b.pckl": "2" })
      const storage = yield* fromEnv({
        STORAGE_TYPE: "mlup.ml.storage.local_disk.DiskStorage",
        STORAGE_KWARGS_PATH_TO_FILES: dir,
        STORAGE_KWARGS_FILE_MASK: String.raw`\.onnx$`,
        STORAGE_KWARGS_NEED_LOAD_FILE: "true"
      })
      const files = yield* Effect.scoped(storage.load)
      expect(files.map((file) => file._tag)).toEqual(["Bytes"])
    }))

  it.scoped("STORAGE_KWARGS as JSON, a field variable wins over it, under a prefix", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "a.onnx": "1", "b.pckl": "2" })
      const storage = yield* fromEnv({
        MLUP_STORAGE_TYPE: "disk",
        MLUP_STORAGE_KWARGS: JSON.stringify({ path_to_files: dir, file_mask: "onnx" }),
        MLUP_STORAGE_KWARGS_FILE_MASK: "pckl"
      }, { prefix: "MLUP" })
      expect(yield* names(storage)).toEqual(["b.pckl"])
    }))

  it.effect("an unknown STORAGE_KWARGS_* variable is an error naming it (a typo is not silence)", () =>
    Effect.gen(function*() {
      const typo = yield* Effect.flip(fromEnv({
        STORAGE_TYPE: "disk",
        STORAGE_KWARGS_PATH_TO_FILES: "/models",
        STORAGE_KWARGS_PAHT_TO_FILES: "/models/iris",
        STORAGE_KWARGS_FILE_MASK_X: "onnx"
      }))
      expect(typo._tag === "InvalidStorageOptions" && typo.issues.map((issue) => issue.field).sort()).toEqual([
        "STORAGE_KWARGS_FILE_MASK_X",
        "STORAGE_KWARGS_PAHT_TO_FILES"
      ])
      expect(typo.message).toContain("STORAGE_KWARGS_PATH_TO_FILES")
      expect(typo.message).not.toContain("/models/iris")
      // Under a prefix, named with it.
      const prefixed = yield* Effect.flip(fromEnv({ MLUP_STORAGE_TYPE: "disk", MLUP_STORAGE_KWARGS_PATH: "/m" }, { prefix: "MLUP" }))
      expect(prefixed._tag === "InvalidStorageOptions" && prefixed.issues[0]!.field).toBe("MLUP_STORAGE_KWARGS_PATH")
    }))

  it.effect("STORAGE_KWARGS_NEED_LOAD_FILE=true is a boolean for every storage, as the docs say", () =>
    Effect.gen(function*() {
      for (
        const [storage_type, where] of [
          ["disk", { STORAGE_KWARGS_PATH_TO_FILES: "/m" }],
          ["http", { STORAGE_KWARGS_URLS: "https://models.example/m.onnx" }],
          ["s3", { STORAGE_KWARGS_BUCKET: "models" }],
          ["gcs", { STORAGE_KWARGS_BUCKET: "models" }],
          ["azure", { STORAGE_KWARGS_CONTAINER: "models" }],
          ["hf", { STORAGE_KWARGS_REPO_ID: "acme/iris" }]
        ] as const
      ) {
        const selection = yield* Storage.selectionFromConfig().pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(
            new Map(Object.entries({ STORAGE_TYPE: storage_type, STORAGE_KWARGS_NEED_LOAD_FILE: "true", ...where })),
            { pathDelim: "_" }
          ))
        )
        const validated = yield* Storage.validate(selection)
        const { needLoadFile, need_load_file } = validated.kwargs as Record<string, unknown>
        expect(need_load_file ?? needLoadFile, storage_type).toBe(true)
      }
    }).pipe(Effect.provide(platform)))

  it.effect("the default is the Memory storage, with the model given in code", () =>
    Effect.gen(function*() {
      const storage = yield* fromEnv({}, { model: "the model" })
      expect(storage.storageType).toBe("memory")
      const files = yield* Effect.scoped(storage.load)
      expect(files[0]?._tag === "Model" && files[0].model).toBe("the model")
    }))

  it.effect("bad values are typed errors; secrets stay redacted", () =>
    Effect.gen(function*() {
      const badJson = yield* Effect.flip(fromEnv({ STORAGE_TYPE: "disk", STORAGE_KWARGS: "{path_to_files:" }))
      expect(badJson._tag).toBe("InvalidStorageOptions")
      expect(badJson.message).toContain("STORAGE_KWARGS: is not valid JSON")
      expect(badJson.message).not.toContain("path_to_files:")
      const notObject = yield* Effect.flip(fromEnv({ STORAGE_TYPE: "disk", STORAGE_KWARGS: "[1]" }))
      expect(notObject.message).toContain("STORAGE_KWARGS: is not a JSON object")
      const badBool = yield* Effect.flip(fromEnv({ STORAGE_TYPE: "disk", STORAGE_KWARGS_PATH_TO_FILES: "/x", STORAGE_KWARGS_NEED_LOAD_FILE: "maybe" }))
      expect(badBool.message).toContain("need_load_file: Expected boolean")
      const unknown = yield* Effect.flip(fromEnv({ STORAGE_TYPE: "ftp" }))
      expect(unknown._tag).toBe("UnknownStorageType")
      // A custom storage's secret read from the environment is a Redacted value.
      const storage = yield* fromEnv(
        { STORAGE_TYPE: "greetings", STORAGE_KWARGS_GREETING: "hey", STORAGE_KWARGS_PASSWORD: "hunter2" },
        { storages: [greetings] }
      )
      const [file] = yield* Effect.scoped(storage.load)
      expect(file?._tag === "Bytes" && file.path).toBe("greetings://7")
      const leaked = yield* Effect.flip(fromEnv(
        { STORAGE_TYPE: "greetings", STORAGE_KWARGS: JSON.stringify({ greeting: "x", password: ["hunter2"] }) },
        { storages: [greetings] }
      ))
      expect(leaked.message).not.toContain("hunter2")
    }))

  it("the kwargs schema decodes secrets as Redacted", () => {
    const decoded = Schema.decodeUnknownSync(greetings.kwargs)({ greeting: "a", password: "p" })
    expect(Redacted.isRedacted(decoded.password)).toBe(true)
    expect(String(decoded.password)).not.toContain("p")
  })
})

// Tests that swap one storage layer for another: the program is the same.
const program = Effect.gen(function*() {
  const storage = yield* Storage.Storage
  return yield* Effect.scoped(Effect.map(storage.load, (files) =>
    files.map((file) =>
      LoadedFile.match(file, {
        Model: ({ model }) => `model:${String(model)}`,
        Path: ({ name }) => `path:${name}`,
        Bytes: ({ bytes, name }) => `bytes:${name}:${bytes.byteLength}`
      })
    )
  ))
})

describe("layers swapped in a test", () => {
  layer(MemoryStorage.layer("in-memory"))((it) => {
    it.effect("the program runs on the Memory storage", () =>
      Effect.map(program, (result) => expect(result).toEqual(["model:in-memory"])))
  })

  it.scoped("the same program on the Disk storage, and the collector swapped for a counting one", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "m.pckl": "12345" })
      const storageLayer = DiskStorage.layer({ pathToFiles: dir, needLoadFile: true }).pipe(
        Layer.provide(platform),
        Layer.provideMerge(GarbageCollector.layerTest)
      )
      const result = yield* Effect.provide(
        Effect.zip(program, Effect.flatMap(GarbageCollector.TestGarbageCollector, (gc) => gc.calls)),
        storageLayer
      )
      expect(result).toEqual([["bytes:m.pckl:5"], 1])
    }))
})

storageContract("custom storage (Storage.define + LoadedFile.bytes)", Effect.succeed({
  layer: Storage.layerFromSelection(
    { storage_type: "greetings", storage_kwargs: { greeting: "hello", times: 3, password: "x" } },
    { storages: [greetings] }
  ).pipe(Layer.provide(platform)),
  expected: [{ _tag: "Bytes", name: "greeting.txt", content: new TextEncoder().encode("hello hello hello") }]
}))

describe("validation without making the storage", () => {
  it.effect("validate decodes the kwargs and names the definition, without touching the path", () =>
    Effect.gen(function*() {
      const validated = yield* Storage.validate({
        storage_type: "mlup.ml.storage.local_disk.DiskStorage",
        storage_kwargs: { path_to_files: "/no/such/folder", need_load_file: true }
      })
      expect(validated.storageType).toBe("mlup.ml.storage.local_disk.DiskStorage")
      expect(validated.definition).toBe(DiskStorage.definition)
      expect(validated.kwargs).toMatchObject({ pathToFiles: "/no/such/folder", needLoadFile: true })
      const invalid = yield* Effect.flip(Storage.validate({ storage_type: "disk", storage_kwargs: { path_to_files: 1, x: 2 } }))
      expect(invalid._tag).toBe("InvalidStorageOptions")
      expect((invalid as StorageError.InvalidStorageOptions).issues.map((issue) => issue.field).sort()).toEqual(["path_to_files", "x"])
    }).pipe(Effect.provide(platform)))

  it.effect("selectionFromConfig reads the selection from Config, as fromConfig would use it", () =>
    Effect.gen(function*() {
      const selection = yield* Storage.selectionFromConfig({ prefix: "MLUP" }).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(
          new Map([
            ["MLUP_STORAGE_TYPE", "disk"],
            ["MLUP_STORAGE_KWARGS", "{\"path_to_files\":\"/a\",\"file_mask\":\"x\"}"],
            ["MLUP_STORAGE_KWARGS_FILE_MASK", "\\.onnx$"],
            ["MLUP_STORAGE_KWARGS_NEED_LOAD_FILE", "true"]
          ]),
          { pathDelim: "_" }
        ))
      )
      expect(selection).toEqual({
        storage_type: "disk",
        // Text as written: the storage's schema reads "true" as true when it decodes.
        storage_kwargs: { path_to_files: "/a", file_mask: "\\.onnx$", need_load_file: "true" }
      })
    }).pipe(Effect.provide(platform)))

  it.effect("hostile selections: __proto__ from JSON, a selection that is no mapping, NUL bytes and huge values", () =>
    Effect.gen(function*() {
      const proto = yield* Effect.flip(
        Storage.validate({ storage_type: "disk", storage_kwargs: JSON.parse("{\"path_to_files\": \"/m\", \"__proto__\": {\"x\": 1}}") })
      )
      expect(proto._tag === "InvalidStorageOptions" && proto.issues.map((issue) => issue.field)).toEqual(["__proto__"])
      for (const selection of [null, [1, 2], "disk"]) {
        const error = yield* Effect.flip(Storage.validate(selection as never))
        expect(error._tag === "InvalidStorageOptions" && error.issues.map((issue) => issue.field)).toEqual(["selection"])
      }
      const nul = yield* Effect.flip(Storage.validate({ storage_type: "disk", storage_kwargs: { path_to_files: "/models/a\u0000b" } }))
      expect(nul._tag === "InvalidStorageOptions" && nul.issues[0]).toMatchObject({ field: "path_to_files" })
      expect(nul.message).not.toContain("\u0000")
      // A 10 MB path: the error keeps it whole, its message quotes a few hundred characters of it.
      const huge = `/${"x".repeat(10 * 1024 * 1024)}`
      const failed = yield* Effect.flip(
        Effect.flatMap(fromSelection({ storage_type: "disk", storage_kwargs: { path_to_files: huge } }), (storage) =>
          Effect.scoped(storage.load))
      )
      expect("path" in failed && failed.path).toBe(huge)
      expect(failed.message.length).toBeLessThan(1000)
    }).pipe(Effect.provide(platform)))
})

describe("Storage.watch: following a storage's selection", () => {
  // Real files, the test's clock: the watch sleeps on the TestClock, its loads touch the disk.
  // Waits until the watch sleeps until a time no further than `duration` from now.
  const sleepingWithin = (duration: Duration.DurationInput) =>
    Effect.gen(function*() {
      const millis = Duration.toMillis(Duration.decode(duration))
      for (let i = 0; ; i++) {
        const now = yield* Clock.currentTimeMillis
        if (Chunk.toReadonlyArray(yield* TestClock.sleeps()).some((deadline) => deadline <= now + millis)) return
        if (i === 4000) {
          throw new Error(`nothing sleeps for ${millis} ms or less (now ${now}; sleeps until ${Chunk.toReadonlyArray(yield* TestClock.sleeps()).join(", ")})`)
        }
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
      }
    })
  // Once the watch sleeps that long, the clock moved on by it.
  const advance = (duration: Duration.DurationInput) => Effect.zipRight(sleepingWithin(duration), TestClock.adjust(duration))
  // Waits until the watch sleeps again (its check after the last adjustment is done).
  const asleep = Effect.gen(function*() {
    for (let i = 0; ; i++) {
      const now = yield* Clock.currentTimeMillis
      if (Chunk.toReadonlyArray(yield* TestClock.sleeps()).some((deadline) => deadline > now)) return
      if (i === 4000) throw new Error("the watch never slept again")
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
    }
  })
  // The inotify watches this process holds (one line each in its inotify descriptor's fdinfo; libuv keeps
  // the descriptor itself open for the loop's life).
  const inotify = () => fs.readdirSync("/proc/self/fd").reduce((count, fd) => {
    try {
      if (!fs.readlinkSync(`/proc/self/fd/${fd}`).includes("inotify")) return count
      return count + fs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").split("\n").filter((line) => line.startsWith("inotify wd:")).length
    } catch {
      return count
    }
  }, 0)
  const watching = (options: DiskStorage.Options, interval: Duration.DurationInput = "10 seconds") =>
    Effect.gen(function*() {
      const versions = yield* Queue.unbounded<{ readonly version: number; readonly texts: ReadonlyArray<string>; readonly files: ReadonlyArray<LoadedFile.LoadedFile> }>()
      const fiber = yield* Storage.watch({ interval, settle: "2 seconds" }).pipe(
        Stream.runForEach((version) =>
          Queue.offer(versions, {
            version: version.version,
            files: version.files,
            texts: version.files.map((file) =>
              file._tag === "Bytes"
                ? Buffer.from(file.bytes).toString()
                : file._tag === "Path"
                ? (fs.statSync(file.path).isDirectory() ? "(a folder)" : fs.readFileSync(file.path, "utf8"))
                : ""
            )
          })
        ),
        Effect.provide(DiskStorage.layer(options).pipe(Layer.provide(platform))),
        Effect.fork
      )
      return { versions, fiber }
    })

  it.scoped("the first version at once; a touched but unchanged file is no change; a file written in pieces only whole", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "model.onnx")
      fs.writeFileSync(file, "version one")
      const { fiber, versions } = yield* watching({ pathToFiles: dir, fileMask: "onnx$", needLoadFile: true })
      yield* advance("2 seconds")
      const first = yield* Queue.take(versions)
      expect(first).toMatchObject({ version: 1, texts: ["version one"] })
      // Touched: a new mtime, the same bytes.
      fs.utimesSync(file, new Date(), new Date(Date.now() + 60_000))
      yield* advance("11 seconds")
      yield* asleep
      expect(yield* Queue.size(versions)).toBe(0)
      // Written in two pieces, the second after the first was seen: only the whole file is delivered.
      fs.writeFileSync(file, "version tw")
      // The file-system event wakes the watch (no interval passed): it waits for the change to settle.
      yield* sleepingWithin("2 seconds")
      fs.appendFileSync(file, "o, complete")
      yield* advance("2 seconds")
      yield* advance("2 seconds")
      const second = yield* Queue.take(versions)
      expect(second).toMatchObject({ version: 2, texts: ["version two, complete"] })
      // The first version's bytes were released when the second was pulled.
      const released = yield* Effect.flip(LoadedFile.getBytes(first.files[0] as LoadedFile.Bytes))
      expect(released._tag).toBe("BytesReleasedError")
      yield* Fiber.interrupt(fiber)
      // Interrupted: the last version is released too.
      expect((yield* Effect.either(LoadedFile.getBytes(second.files[0] as LoadedFile.Bytes)))._tag).toBe("Left")
    })))

  it.scoped("a failed check is logged and retried, never the end; with onError: \"fail\", it is", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "model.onnx")
      fs.writeFileSync(file, "one")
      const { fiber, versions } = yield* watching({ pathToFiles: file, fileMask: "onnx$" })
      yield* advance("2 seconds")
      expect(yield* Queue.take(versions)).toMatchObject({ version: 1, texts: ["one"] })

      fs.rmSync(file)
      yield* advance("11 seconds")
      yield* advance("11 seconds")
      yield* asleep
      expect(yield* Queue.size(versions)).toBe(0)
      fs.writeFileSync(file, "three")
      // The next checks (an interval, then the settling) deliver it.
      for (let i = 0; i < 6 && (yield* Queue.size(versions)) === 0; i++) {
        yield* asleep
        yield* TestClock.adjust("11 seconds")
      }
      expect(yield* Queue.take(versions)).toMatchObject({ version: 2, texts: ["three"] })

      yield* Fiber.interrupt(fiber)

      const failing = yield* Storage.watch({ interval: "10 seconds", settle: "2 seconds", onError: "fail" }).pipe(
        Stream.runDrain,
        Effect.provide(DiskStorage.layer({ pathToFiles: path.join(dir, "missing.onnx") }).pipe(Layer.provide(platform))),
        Effect.flip
      )
      expect(failing._tag).toBe("PathNotFound")
    })))

  it.scoped("without file-system events (the folder did not exist when the watch began), the Disk storage is polled", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const folder = path.join(dir, "later", "models")
      // An interval of its own (7 s): its pause is told apart from the sleeps other tests left on the clock.
      const { fiber, versions } = yield* watching({ pathToFiles: folder, fileMask: "onnx$" }, "7 seconds")
      // Nothing there: the first check failed (it pauses for the interval); its folder's parent is missing too,
      // so no events can be had.
      yield* sleepingBetween("6.3 seconds", "7.7 seconds")
      fs.mkdirSync(folder, { recursive: true })
      fs.writeFileSync(path.join(folder, "model.onnx"), "made later")
      // No event wakes it: nothing happens before the interval (given the time a settling would take).
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
      yield* TestClock.adjust("2 seconds")
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
      expect(yield* Queue.size(versions)).toBe(0)
      // The interval's check sees it; it settles; it is delivered.
      yield* TestClock.adjust("6 seconds")
      yield* advance("2 seconds")
      expect(yield* Queue.take(versions)).toMatchObject({ version: 1, texts: ["made later"] })
      yield* Fiber.interrupt(fiber)
    })))

  it.scoped("a folder published by switching a symbolic link (as git-sync does): every switch is an event, not only the first", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const current = path.join(dir, "current")
      // A version is a new folder; the link is switched to it by a rename; the old folder is removed.
      const publish = (version: number) => {
        const before = fs.existsSync(current) ? fs.realpathSync(current) : undefined
        writeFiles(path.join(dir, `rev-${version}`), { "model.onnx": `model ${version}`, "labels.onnx": `labels ${version}` })
        fs.symlinkSync(path.join(dir, `rev-${version}`), path.join(dir, "next"))
        fs.renameSync(path.join(dir, "next"), current)
        if (before !== undefined) fs.rmSync(before, { recursive: true })
      }
      publish(1)
      const before = inotify()
      const { fiber, versions } = yield* watching({ pathToFiles: current, fileMask: "onnx$" }, "100 seconds")
      yield* advance("2 seconds")
      expect(yield* Queue.take(versions)).toMatchObject({ version: 1, texts: ["labels 1", "model 1"] })
      // Watched: where the link leads (Node's recursive watch on Linux: the folder and each file in it), and the
      // folder that holds the link.
      const watches = inotify()
      expect(watches).toBe(before + 4)
      for (const version of [2, 3, 4]) {
        yield* asleep
        publish(version)
        // Woken by the switch (the clock never moves by an interval): the new version settles, and is delivered.
        yield* advance("2 seconds")
        expect(yield* Queue.take(versions)).toMatchObject({ version, texts: [`labels ${version}`, `model ${version}`] })
        // The watch moved to the new folder: as many watches as before, none left on the old ones.
        for (let i = 0; inotify() !== watches && i < 200; i++) yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
        expect(inotify()).toBe(watches)
      }
      yield* Fiber.interrupt(fiber)
      expect(inotify()).toBe(before)
    })))

  it.scoped("a handed-over folder that cannot be read whole (a path too long inside it) is told apart, never the watch's end", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const models = path.join(dir, "models")
      writeFiles(models, { "model.onnx": "weights" })
      // A folder the mask selects, with a path deeper than PATH_MAX (4096) inside: reading it whole fails
      // with ENAMETOOLONG. Made (and removed, before tempDir's own removal) by the shell, one level at a time.
      fs.mkdirSync(path.join(models, "tokenizer.onnx"))
      const level = "a".repeat(250)
      execFileSync("bash", ["-c", `cd "$1" && for i in $(seq 20); do mkdir ${level} && cd ${level}; done && echo deep > file`, "-", path.join(models, "tokenizer.onnx")])
      yield* Effect.addFinalizer(() => Effect.sync(() => execFileSync("rm", ["-rf", models])))
      fs.writeFileSync(path.join(models, "tokenizer.onnx", "vocab.txt"), "one")
      const { fiber, versions } = yield* watching({ pathToFiles: models, fileMask: "onnx$" })
      const next = Effect.raceFirst(Queue.take(versions), Effect.zipRight(Fiber.join(fiber), Effect.dieMessage("the watch ended")))
      yield* advance("2 seconds")
      expect((yield* next).files.map((file) => (file._tag === "Model" ? "" : file.name))).toEqual(["model.onnx", "tokenizer.onnx"])
      // What can be read of it still tells a change.
      fs.writeFileSync(path.join(models, "tokenizer.onnx", "vocab.txt"), "two, longer")
      yield* advance("11 seconds")
      yield* advance("2 seconds")
      expect((yield* next).version).toBe(2)
      yield* Fiber.interrupt(fiber)
    })))

  it.scoped("hotSwap: a reader in a loop across 50 swaps never sees a closed model; a version that fails is rejected, the old one serves; a budget of one version is enough", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "model.onnx")
      fs.writeFileSync(file, "weights 0")
      const closedEarly: Array<string> = []
      let opened = 0
      let closed = 0
      // The deserialize step: a "model" whose resource is freed with its scope; "broken" fails.
      const deserialize = (files: ReadonlyArray<LoadedFile.LoadedFile>) =>
        Effect.gen(function*() {
          const text = Buffer.from(yield* LoadedFile.getBytes(files[0] as LoadedFile.Bytes)).toString()
          if (text.includes("broken")) return yield* Effect.fail("cannot parse" as const)
          return yield* Effect.acquireRelease(
            Effect.sync(() => {
              opened++
              return { text, open: true }
            }),
            (model) => Effect.sync(() => {
              model.open = false
              closed++
            })
          )
        })
      // Made in a fiber of its own: the first version settles on the test's clock.
      // A memory budget with room for one version's bytes, not two: each version's bytes are released once it is
      // deserialized (with keepFiles: true, every swap would wait for the budget and time out: checked), and the
      // checks take the file by path (no budget).
      const making = yield* Effect.fork(Storage.hotSwap(deserialize, { interval: "10 seconds", settle: "1 second" }).pipe(
        Effect.provide(DiskStorage.layer({ pathToFiles: file, fileMask: "onnx$", needLoadFile: true }).pipe(Layer.provide(platform))),
        Effect.provide(MemoryBudget.layer({ bytes: 16, timeout: "5 seconds" }))
      ))
      yield* advance("1 second")
      const model = yield* Fiber.join(making)
      expect(yield* model.use((current) => Effect.succeed(current.text))).toBe("weights 0")
      const changes: Array<Storage.Swap<unknown>> = []
      yield* Effect.forkScoped(Stream.runForEach(model.changes, (change) => Effect.sync(() => changes.push(change))))
      // The application: reads the model in a loop, holding it across a yield.
      let reads = 0
      const reader = yield* Effect.forkScoped(Effect.forever(
        model.use((current) =>
          Effect.gen(function*() {
            if (!current.open) closedEarly.push(current.text)
            // Across a turn of the event loop (as an inference would be).
            yield* Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))
            if (!current.open) closedEarly.push(current.text)
            reads++
          })
        )
      ))
      const swapTo = (text: string) =>
        Effect.gen(function*() {
          const seen = changes.length
          fs.writeFileSync(file, text)
          // Until this write was switched in or rejected.
          for (let i = 0; i < 8 && changes.length === seen; i++) {
            yield* asleep
            yield* TestClock.adjust("10 seconds")
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
          }
        })
      for (let i = 1; i <= 50; i++) {
        yield* swapTo(i % 20 === 6 ? "broken weights" : `weights ${i}`)
        if (i % 20 === 6) {
          expect(changes.at(-1)).toMatchObject({ _tag: "Rejected", error: "cannot parse" })
          expect(yield* model.use((current) => Effect.succeed(current.text))).toBe(`weights ${i - 1}`)
        } else {
          expect(yield* model.use((current) => Effect.succeed(current.text))).toBe(`weights ${i}`)
        }
      }
      yield* Fiber.interrupt(reader)
      expect(closedEarly).toEqual([])
      expect(reads).toBeGreaterThan(50)
      // Every replaced version was closed; only the current one is open.
      expect(opened - closed).toBe(1)
      // 47 switches seen (the first version was switched in before the test subscribed), three rejections.
      expect(changes.filter((change) => change._tag === "Switched").length).toBe(47)
      expect(changes.filter((change) => change._tag === "Rejected").length).toBe(3)
    })), 60_000)

  it.scoped("interrupted or closed, nothing is left: no file-system watcher, no open version, no bytes held", () =>
    onItsOwnClock(Effect.gen(function*() {
      const dir = yield* tempDir
      fs.mkdirSync(path.join(dir, "models", "nested"), { recursive: true })
      const file = path.join(dir, "models", "model.onnx")
      fs.writeFileSync(file, "weights")
      const before = { descriptors: openDescriptors(), inotify: inotify() }
      const storage = DiskStorage.layer({ pathToFiles: path.join(dir, "models"), fileMask: "onnx$", needLoadFile: true }).pipe(Layer.provide(platform))
      // The watch, interrupted while it waits: its watcher (inotify) is closed, its last version released.
      const { fiber, versions } = yield* watching({ pathToFiles: path.join(dir, "models"), fileMask: "onnx$", needLoadFile: true })
      yield* advance("2 seconds")
      const version = yield* Queue.take(versions)
      expect(inotify()).toBeGreaterThan(before.inotify)
      yield* Fiber.interrupt(fiber)
      expect((yield* Effect.either(LoadedFile.getBytes(version.files[0] as LoadedFile.Bytes)))._tag).toBe("Left")
      expect(inotify()).toBe(before.inotify)
      // hotSwap, its scope closed: every version it opened is closed.
      let opened = 0
      let closed = 0
      const deserialize = () => Effect.acquireRelease(Effect.sync(() => ++opened), () => Effect.sync(() => void closed++))
      const making = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const model = yield* Storage.hotSwap(deserialize, { interval: "10 seconds", settle: "2 seconds" })
        fs.writeFileSync(file, "weights, second")
        for (let i = 0; i < 8 && (yield* model.version) < 2; i++) {
          yield* asleep
          yield* TestClock.adjust("10 seconds")
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
        }
        expect(yield* model.version).toBe(2)
      })).pipe(Effect.provide(storage)))
      yield* advance("2 seconds")
      yield* Fiber.join(making)
      expect([opened, closed]).toEqual([2, 2])
      expect(inotify()).toBe(before.inotify)
      // Descriptors: the same, but for libuv's one inotify descriptor, opened by the first watch of the process.
      expect(openDescriptors() - before.descriptors).toBeLessThanOrEqual(1)
    })))

  it.scoped("the Memory storage's model (an object or a plain value) is one version, followed by its identity", () =>
    onItsOwnClock(Effect.gen(function*() {
      for (const model of [{ weights: [1, 2] }, 42]) {
        const fiber = yield* Storage.watch({ interval: "10 seconds", settle: "1 second" }).pipe(
          Stream.take(1),
          Stream.runCollect,
          Effect.provide(MemoryStorage.layer(model)),
          Effect.fork
        )
        yield* advance("1 second")
        const [version] = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
        expect(version).toMatchObject({ version: 1, files: [{ _tag: "Model", model }] })
      }
    })))
})

describe("the hot-reload example (examples/hot-reload.ts, docs/hot-reload.md)", () => {
  it("the docs show the example as it is (the package's import paths for the repository's)", () => {
    const example = fs.readFileSync(path.join(root, "examples/hot-reload.ts"), "utf8")
      .replaceAll("\"../src/NodeStorage.js\"", "\"mlup-storage/node\"")
      .replace(/"\.\.\/src\/(\w+)\.js"/g, "\"mlup-storage/$1\"")
    const page = fs.readFileSync(path.join(root, "docs/hot-reload.md"), "utf8")
    const blocks = [...page.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1])
    expect(blocks).toContain(example)
  })

  it.scopedLive("an ONNX server answers during swaps: version 2 switched in while requests run, a broken version rejected, never an error", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const modelFile = path.join(dir, "mlp.onnx")
      fs.copyFileSync(path.join(root, "examples/model/mlp.onnx"), modelFile)
      const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "examples/hot-reload.ts")], {
        cwd: root,
        env: {
          ...process.env,
          STORAGE_TYPE: "disk",
          STORAGE_KWARGS: JSON.stringify({ path_to_files: dir, file_mask: String.raw`\.onnx$` }),
          PORT: "0",
          WATCH_SETTLE: "300 millis"
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
      const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)))
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      const until = (what: string, f: () => boolean | Promise<boolean>) =>
        Effect.promise(async () => {
          for (const started = Date.now(); !(await f()); await new Promise((resolve) => setTimeout(resolve, 50))) {
            if (Date.now() - started > 60_000) throw new Error(`waited a minute for ${what}; the server said:\n${output}`)
          }
        })
      yield* until("the server to listen", () => /Listening on http:\/\/127\.0\.0\.1:\d+/.test(output))
      const origin = /Listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)![1]!
      const x = Array.from({ length: 1024 }, (_, i) => Math.sin(i / 7))
      const ask = async () => {
        const response = await fetch(`${origin}/predict`, { method: "POST", body: JSON.stringify({ x }) })
        if (response.status !== 200) throw new Error(`${response.status}: ${await response.text()}`)
        return (await response.json()) as { version: number; probabilities: Array<number> }
      }
      const closeTo = (probabilities: ReadonlyArray<number>, expected: Float32Array) =>
        probabilities.length === expected.length && probabilities.every((p, i) => Math.abs(p - expected[i]!) < 1e-4)
      const input = Float32Array.from(x)
      const first = yield* Effect.promise(ask)
      expect(first.version).toBe(1)
      expect(closeTo(first.probabilities, predict(demoMlp(), input))).toBe(true)

      // Requests in a loop, four at a time, while new versions arrive.
      const failures: Array<string> = []
      const seen = new Map<number, number>()
      let running = true
      const clients = Array.from({ length: 4 }, async () => {
        while (running) {
          try {
            const answer = await ask()
            seen.set(answer.version, (seen.get(answer.version) ?? 0) + 1)
          } catch (error) {
            failures.push(String(error))
          }
        }
      })
      // Version 2: other weights, written in place (not renamed): the watch waits for it to settle.
      const second = makeMlp(1024, 4096, 10, 2025)
      fs.writeFileSync(modelFile, toOnnx(second))
      yield* until("version 2", async () => (await ask()).version === 2)
      expect(closeTo((yield* Effect.promise(ask)).probabilities, predict(second, input))).toBe(true)
      // A broken version: rejected, version 2 goes on serving.
      fs.writeFileSync(modelFile, "not an onnx model")
      yield* until("the broken version rejected", () => output.includes("rejected; the current one goes on serving"))
      expect((yield* Effect.promise(ask)).version).toBe(2)
      running = false
      yield* Effect.promise(() => Promise.all(clients))
      expect(failures).toEqual([])
      expect(seen.get(1)! + seen.get(2)!).toBeGreaterThan(10)
      child.kill("SIGTERM")
      yield* Effect.promise(() => exited)
    }), 120_000)
})
