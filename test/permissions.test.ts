import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { tempDir, writeFiles } from "./helpers.js"

// Root reads everything, so as root the loads run in a child process as the
// unprivileged user "nobody" (65534); otherwise as the current user.
const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}

const loadInChild = (pathToFiles: string, needLoadFile: boolean) =>
  Effect.sync(() =>
    JSON.parse(
      execFileSync(process.execPath, ["--import", "tsx", "test/fixtures/load-child.ts", pathToFiles, String(needLoadFile)], {
        ...asUser,
        encoding: "utf8",
        env: { ...process.env, TSX_TSCONFIG_PATH: path.resolve("tsconfig.json") }
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
