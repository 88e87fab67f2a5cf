// The contract suite itself (mlup-storage/testing): it passes every storage of
// this repository (see each storage's test file), and it must fail a storage
// that breaks the release guarantee. Such a storage's suite is run here as a
// separate vitest run, and its results read.
import { describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

describe("storageContract", () => {
  it("fails a storage that hands out a view of a buffer it keeps, in every release test", () => {
    const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mlup-contract-")), "report.json")
    try {
      execFileSync(process.execPath, [
        path.join(root, "node_modules/vitest/vitest.mjs"),
        "run",
        "--root",
        path.join(root, "test/fixtures/contract"),
        "--config",
        path.join(root, "test/fixtures/contract/vitest.config.ts"),
        "--reporter=json",
        `--outputFile=${report}`
      ], { cwd: root, stdio: "ignore" })
    } catch {
      // vitest exits 1 when a test fails: the point of this run.
    }
    const results = JSON.parse(fs.readFileSync(report, "utf8")) as {
      testResults: Array<{ assertionResults: Array<{ title: string; status: string }> }>
    }
    const status = Object.fromEntries(results.testResults.flatMap((file) => file.assertionResults.map((test) => [test.title, test.status])))
    expect(status).toEqual({
      "load delivers the expected files, in order": "passed",
      "two loads deliver the same files in the same order": "passed",
      "loadBytesSingleFile hands over each file as load does": "passed",
      "closing the scope releases the bytes and runs the collector once (if it handed out bytes)": "failed",
      "a failure inside the scope still releases everything": "failed",
      "interruption inside the scope still releases everything": "failed",
      "a copy made inside the scope outlives it": "passed"
    })
  }, 60_000)
})
