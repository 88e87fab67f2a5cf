import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as esbuild from "esbuild"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { tempDir, writeFiles } from "./helpers.js"

// Root reads everything, so as root the loads run in a child process as the
// unprivileged user "nobody" (65534); otherwise as the current user.
const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}

// That user may not reach the checkout (a folder only its owner can read, say
// mode 0700): the child is bundled into one file, in a folder anyone can read.
let childDir = ""
let child = ""
beforeAll(async () => {
  childDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-child-"))
  fs.chmodSync(childDir, 0o755)
  child = path.join(childDir, "load-child.mjs")
  await esbuild.build({
    entryPoints: [path.resolve(import.meta.dirname, "fixtures", "load-child.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    outfile: child,
    logLevel: "error"
  })
  fs.chmodSync(child, 0o644)
}, 60_000)
afterAll(() => fs.rmSync(childDir, { recursive: true, force: true }))

const loadInChild = (pathToFiles: string, needLoadFile: boolean) =>
  Effect.sync(() =>
    JSON.parse(
      execFileSync(process.execPath, [child, pathToFiles, String(needLoadFile)], {
        ...asUser,
        cwd: childDir,
        encoding: "utf8"
      })
    )
  )

describe("permissions (real, in a process without them)", () => {
  it.scoped("an unreadable file: path only works (contents are never read), bytes is PermissionDenied", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.chmodSync(dir, 0o755)
      writeFiles(dir, { "model.pckl": "secret weights" })
      fs.chmodSync(path.join(dir, "model.pckl"), 0o000)
      expect(yield* loadInChild(dir, false)).toEqual({ files: [{ tag: "Path", name: "model.pckl" }] })
      const { error } = yield* loadInChild(dir, true)
      expect(error).toMatchObject({ _tag: "PermissionDenied", path: path.join(dir, "model.pckl"), operation: "open" })
      expect(error.message).toContain("Permission denied to open")
    }), { timeout: 60_000 })

  it.scoped("an unlistable folder is PermissionDenied", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.chmodSync(dir, 0o755)
      writeFiles(dir, { "models/model.pckl": "w" })
      fs.chmodSync(path.join(dir, "models"), 0o311)
      const { error } = yield* loadInChild(path.join(dir, "models"), false)
      expect(error).toMatchObject({ _tag: "PermissionDenied", path: path.join(dir, "models"), operation: "list" })
    }), { timeout: 60_000 })
})
