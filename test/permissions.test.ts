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
let bin = ""
beforeAll(async () => {
  childDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-storage-child-"))
  fs.chmodSync(childDir, 0o755)
  child = path.join(childDir, "load-child.mjs")
  bin = path.join(childDir, "bin.mjs")
  const bundles: Array<[string, string]> = [[path.join("test", "fixtures", "load-child.ts"), child], [path.join("src", "bin.ts"), bin]]
  for (const [entry, outfile] of bundles) {
    await esbuild.build({
      entryPoints: [path.resolve(import.meta.dirname, "..", entry)],
      bundle: true,
      platform: "node",
      format: "esm",
      outfile,
      // Bundled CommonJS dependencies (the AWS SDK) call require.
      banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
      logLevel: "error"
    })
    fs.chmodSync(outfile, 0o644)
  }
}, 120_000)
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

  it.scoped("a target folder that cannot be written is WriteFailed that names it, and does not blame cache_dir", () =>
    Effect.gen(function*() {
      // Only as root can the test make a folder that the child's user cannot write.
      if (process.getuid?.() !== 0) return
      const dir = yield* tempDir
      fs.chmodSync(dir, 0o755)
      writeFiles(dir, { "models/model.pckl": "weights" })
      // Readable by anyone, writable by its owner (root) only.
      const to = path.join(dir, "locked", "out")
      fs.mkdirSync(path.dirname(to), { mode: 0o755 })
      let stderr = ""
      let code = 0
      try {
        execFileSync(process.execPath, [bin, "fetch", "-t", "disk", "-k", JSON.stringify({ path_to_files: path.join(dir, "models") }), "--to", to, "-q"], {
          ...asUser,
          cwd: childDir,
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"]
        })
      } catch (error) {
        code = (error as { status: number }).status
        stderr = (error as { stderr: string }).stderr
      }
      expect(code).toBe(7)
      expect(stderr).toContain(to)
      expect(stderr).toContain("permission denied")
      expect(stderr).not.toContain("cache_dir")
    }), { timeout: 60_000 })
})
