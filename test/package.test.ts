// The package as a consumer gets it: packed with `npm pack`, installed from the
// tarball into a fresh project, imported, type-checked and run.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { tempDir } from "./helpers.js"

const root = path.resolve(import.meta.dirname, "..")
const versionOf = (name: string): string =>
  JSON.parse(fs.readFileSync(path.join(root, "node_modules", name, "package.json"), "utf8")).version

interface Ran {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * A command, run asynchronously (a long synchronous one would block the test
 * worker, which vitest then reports as an error of the run): its output, or
 * how it failed.
 */
const exec = (command: string, args: ReadonlyArray<string>, cwd: string): Effect.Effect<string, Ran> =>
  Effect.async<string, Ran>((resume) => {
    const child = execFile(command, args, {
      cwd,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      // No colours: the output is read as text.
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ONNXRUNTIME_NODE_INSTALL: "skip", npm_config_audit: "false", npm_config_fund: "false" }
    }, (error, stdout, stderr) => {
      if (error === null) resume(Effect.succeed(stdout))
      else resume(Effect.fail({ status: typeof error.code === "number" ? error.code : null, stdout, stderr }))
    })
    return Effect.sync(() => child.kill())
  })

/** A command that must succeed: its output. */
const run = (command: string, args: ReadonlyArray<string>, cwd: string): Effect.Effect<string> =>
  Effect.orDieWith(
    exec(command, args, cwd),
    (failed) => new Error(`${command} ${args.join(" ")} exited ${failed.status}:\n${failed.stderr}${failed.stdout}`)
  )

const readmeExample = (): string => {
  const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
  const block = /## A 20-line example[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)
  if (block === null) throw new Error("README.md has no example block")
  return block[1]!
}

/** The README's install line (the first `npm install` in its Install section's sh block). */
const readmeInstallLine = (): Array<string> => {
  const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
  const line = /## Install[\s\S]*?```sh\n(npm install [^\n]*)\n/.exec(readme)?.[1]
  if (line === undefined) throw new Error("README.md has no install line")
  return line.split(/\s+/)
}

/**
 * Every `ts` block of the README and the docs, as files of a project per
 * page: a block whose first line is a comment naming a file (`// my-storages.ts`)
 * is that file, any other is `block-N.ts`. Every block must be complete: its
 * imports, its values, nothing left to the reader.
 */
const docBlocks = (): Array<{ readonly page: string; readonly file: string; readonly code: string }> => {
  const pages = [
    "README.md",
    ...fs.readdirSync(path.join(root, "docs"), { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".md"))
      .map((file) => path.join("docs", file))
  ]
  return pages.flatMap((page) =>
    [...fs.readFileSync(path.join(root, page), "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match, i) => {
      const named = /^\/\/ ([\w.-]+\.ts)\n/.exec(match[1]!)
      return {
        page: page.replace(/\.md$/, "").replace(/[/\\]/g, "-"),
        file: named?.[1] ?? `block-${i + 1}.ts`,
        code: match[1]!
      }
    })
  )
}

/** Every `npm install` line of the README and the docs. */
const installLines = (): Array<string> =>
  [path.join(root, "README.md"), ...fs.readdirSync(path.join(root, "docs"), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".md"))
    .map((file) => path.join(root, "docs", file))]
    .flatMap((file) => fs.readFileSync(file, "utf8").split("\n"))
    .filter((line) => /^\s*(RUN\s+)?npm install /.test(line))

describe("the install lines", () => {
  it("pin every peer to the Effect 3 line (the registry's latest is Effect 4)", () => {
    const lines = installLines()
    expect(lines.length).toBeGreaterThanOrEqual(3)
    for (const line of lines.filter((line) => /mlup-storage| effect(@|\s|$)/.test(line))) {
      expect(line).toMatch(/ effect@\^3\./)
      expect(line).toMatch(/ @effect\/platform@\^0\.97\./)
      expect(line).toMatch(/ @effect\/platform-node@\^0\.108\./)
    }
  })
})

describe("the packed package", () => {
  it.scoped("installs from its tarball, type-checks and runs in a consumer project", () =>
    Effect.gen(function*() {
      const work = yield* tempDir
      yield* run("npm", ["pack", "--pack-destination", work], root)
      const tarball = fs.readdirSync(work).find((name) => name.endsWith(".tgz"))!
      expect(tarball).toMatch(/^mlup-storage-\d+\.\d+\.\d+\.tgz$/)
      const listing = (yield* run("tar", ["-tzf", path.join(work, tarball)], work)).split("\n")
      expect(listing).toContain("package/dist/index.d.ts")
      expect(listing).toContain("package/dist/NodeStorage.js")
      expect(listing).toContain("package/dist/bin.js")
      expect(listing).toContain("package/dist/Testing.js")
      expect(listing.some((file) => file.startsWith("package/test/"))).toBe(false)
      // The docs ship with it: the installed README's links lead somewhere.
      expect(listing).toContain("package/docs/cli.md")
      expect(listing).toContain("package/docs/storages/s3.md")

      const consumer = path.join(work, "consumer")
      fs.mkdirSync(consumer)
      fs.copyFileSync(path.join(root, "test/fixtures/consumer/main.ts"), path.join(consumer, "main.ts"))
      // The README's example, as a reader would paste it.
      fs.writeFileSync(path.join(consumer, "readme.ts"), readmeExample())
      // Every block of the docs, a folder per page. The pages that import what the install line does not
      // bring (@effect/vitest, @azure/identity, onnxruntime-node) are checked once those are installed, below.
      const blocks = docBlocks()
      expect(blocks.length).toBeGreaterThanOrEqual(22)
      const moreNeeded = new Set(
        blocks.filter((block) => /from "(@effect\/vitest|vitest|@azure\/identity|onnxruntime-node)"/.test(block.code)).map((block) => block.page)
      )
      for (const block of blocks) {
        fs.mkdirSync(path.join(consumer, "docs", block.page), { recursive: true })
        fs.writeFileSync(path.join(consumer, "docs", block.page, block.file), block.code)
      }
      const docFiles = (all: boolean) =>
        blocks.filter((block) => all || !moreNeeded.has(block.page)).map((block) => `docs/${block.page}/${block.file}`)
      const tsconfig = JSON.parse(fs.readFileSync(path.join(root, "test/fixtures/consumer/tsconfig.json"), "utf8"))
      const writeTsconfig = (files: ReadonlyArray<string>) =>
        fs.writeFileSync(path.join(consumer, "tsconfig.json"), JSON.stringify({ ...tsconfig, files }))
      writeTsconfig(["main.ts", "readme.ts", ...docFiles(false)])
      fs.writeFileSync(path.join(consumer, "package.json"), JSON.stringify({
        name: "consumer",
        private: true,
        type: "module",
        dependencies: { "@types/node": versionOf("@types/node") }
      }))
      // The README's install line as it is, with the tarball in place of the name: the peers it pins
      // are resolved from the registry as a user's install resolves them.
      const [npm, ...args] = readmeInstallLine().map((word) => (word === "mlup-storage" ? path.join(work, tarball) : word))
      expect(npm).toBe("npm")
      expect(args).toContain(path.join(work, tarball))
      yield* run("npm", [...args, "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"], consumer)
      expect(JSON.parse(fs.readFileSync(path.join(consumer, "node_modules/effect/package.json"), "utf8")).version)
        .toMatch(/^3\./)
      // Nothing an application without S3 or the command line's code does not need: no AWS SDK, no
      // @effect/cli (the command is one bundled file).
      for (const absent of ["@aws-sdk/client-s3", "@effect-aws/client-s3", "@effect/cli", "yaml"]) {
        expect(fs.existsSync(path.join(consumer, "node_modules", absent))).toBe(false)
      }
      // One copy of effect: the package brings none of its own.
      expect(fs.existsSync(path.join(consumer, "node_modules/mlup-storage/node_modules/effect"))).toBe(false)

      // The declarations, the README and the docs type-check with skipLibCheck off and no optional peer
      // installed: with this project's TypeScript (5.9), and with the registry's TypeScript 7.
      expect(tsconfig.compilerOptions.skipLibCheck).toBe(false)
      const tsc = (compiler: string) => run(process.execPath, [compiler, "-p", "tsconfig.json"], consumer)
      yield* tsc(path.join(root, "node_modules/typescript/bin/tsc"))
      const ts7 = path.join(work, "ts7")
      fs.mkdirSync(ts7)
      yield* run("npm", ["install", "typescript@^7", "--prefix", ts7, "--prefer-offline", "--no-audit", "--no-fund"], work)
      expect(JSON.parse(fs.readFileSync(path.join(ts7, "node_modules/typescript/package.json"), "utf8")).version).toMatch(/^7\./)
      yield* tsc(path.join(ts7, "node_modules/typescript/bin/tsc"))
      const output = JSON.parse(yield* run(process.execPath, ["out/main.js"], consumer))
      expect(output).toEqual({
        results: [["bytes:model.onnx:weights"], ["path:model.onnx:7"], ["error:NothingMatched"]],
        sameModule: true
      })

      const models = path.join(work, "models")
      fs.mkdirSync(models)
      fs.writeFileSync(path.join(models, "iris.onnx"), "12345")
      fs.writeFileSync(path.join(models, "notes.txt"), "")
      expect(yield* run(process.execPath, ["out/readme.js", models], consumer)).toBe("iris.onnx: 5 bytes in memory\n")
      fs.rmSync(path.join(models, "iris.onnx"))
      expect(yield* run(process.execPath, ["out/readme.js", models], consumer))
        .toBe(`no \\.onnx$ in ${models}; found: notes.txt\n`)
      expect(yield* run(process.execPath, ["out/readme.js", path.join(work, "absent")], consumer))
        .toBe(`${path.join(work, "absent")} does not exist\n`)

      // The command line, as the package's bin, from the fresh install.
      const help = yield* run("npx", ["--no-install", "mlup-storage", "--help"], consumer)
      expect(help).toContain("fetch")
      const packageVersion = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).version
      expect((yield* run("npx", ["--no-install", "mlup-storage", "--version"], consumer)).trim()).toBe(packageVersion)
      const fetched = JSON.parse(yield* run("npx", [
        "--no-install",
        "mlup-storage",
        "fetch",
        "--storage-type",
        "disk",
        "--kwargs",
        JSON.stringify({ path_to_files: models, file_mask: "notes" }),
        "--json"
      ], consumer))
      expect(fetched).toMatchObject({ ok: true, files: [{ name: "notes.txt", size: 0 }] })
      // S3 without the AWS SDK installed: an invalid configuration that says what to install.
      const failureOf = (command: string, args: ReadonlyArray<string>) =>
        Effect.map(Effect.either(exec(command, args, consumer)), (result) =>
          result._tag === "Left" ? result.left : { status: 0, stdout: result.right, stderr: "" })
      const s3 = yield* failureOf("npx", [
        "--no-install", "mlup-storage", "fetch", "s3://models/iris/", "-k", "{\"endpoint\": \"http://127.0.0.1:9\"}"
      ])
      expect(s3.status).toBe(2)
      expect(s3.stderr).toContain("npm install @aws-sdk/client-s3")
      // Azure without its SDK: the same, naming @azure/storage-blob.
      const azure = yield* failureOf("npx", ["--no-install", "mlup-storage", "fetch", "az://models/iris/", "-k", "{\"account\": \"acme\"}"])
      expect(azure.status).toBe(2)
      expect(azure.stderr).toContain("npm install @azure/storage-blob")

      // Internal modules are not part of the public surface.
      for (const module of ["mlup-storage/internal/mask.js", "mlup-storage/cli/place.js"]) {
        const internal = yield* failureOf(process.execPath, ["-e", `import('${module}')`])
        expect(internal.stderr, module).toContain("ERR_PACKAGE_PATH_NOT_EXPORTED")
      }
      // The binary is a program, not a module: importing it does not run the command line.
      const bin = yield* failureOf(process.execPath, ["-e", "import('mlup-storage/bin').then(() => console.log('ran'))"])
      expect(bin.stdout).not.toContain("ran")
      expect(bin.stderr).toContain("ERR_PACKAGE_PATH_NOT_EXPORTED")

      // The pages that need more: with @effect/vitest (an optional peer), @azure/identity and onnxruntime-node
      // (the hot-reload page's server) in place,
      // they type-check too, and the testing page's tests (the contract suite on its own storage) pass.
      yield* run("npm", [
        "install",
        `@effect/vitest@${versionOf("@effect/vitest")}`,
        `vitest@${versionOf("vitest")}`,
        "@azure/identity@^4",
        "--prefer-offline",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund"
      ], consumer)
      // onnxruntime-node (247 MB with its binaries) is linked from this project's install, the same version:
      // only its declarations are needed, to type-check the hot-reload page's server.
      for (const name of ["onnxruntime-node", "onnxruntime-common"]) {
        fs.symlinkSync(path.join(root, "node_modules", name), path.join(consumer, "node_modules", name), "dir")
      }
      writeTsconfig(["main.ts", "readme.ts", ...docFiles(true)])
      yield* tsc(path.join(root, "node_modules/typescript/bin/tsc"))
      const tested = yield* run(
        process.execPath,
        [path.join(consumer, "node_modules/vitest/vitest.mjs"), "run", "--root", path.join(consumer, "docs/docs-testing")],
        consumer
      )
      const plain = tested.replace(/\u001b\[[0-9;]*m/g, "")
      expect(plain).toMatch(/Tests\s+9 passed/)
      expect(plain).not.toMatch(/failed|skipped/)
    }), { timeout: 420_000 })
})
