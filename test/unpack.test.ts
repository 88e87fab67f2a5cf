import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as unpack from "../src/internal/unpack.js"

const file = (name: string, size = 10, mode = 0o644): unpack.Entry => ({ name, type: "file", size, mode })
const folder = (name: string): unpack.Entry => ({ name, type: "directory", size: 0, mode: 0o755 })
const symlink = (name: string, target: string): unpack.Entry => ({ name, type: "symlink", size: 0, mode: 0o777, target })
const hardlink = (name: string, target: string): unpack.Entry => ({ name, type: "hardlink", size: 0, mode: 0o644, target })
const roomy: unpack.Limits = { maxEntries: 1000, maxBytes: 1024 ** 3, maxRatio: 1000 }

/** Admits every entry and finishes; the first refusal (or the admitted paths). */
const run = (entries: ReadonlyArray<unpack.Entry>, limits = roomy, archiveSize: number | undefined = 1024 ** 2) => {
  const guard = unpack.guard(limits, archiveSize)
  const paths: Array<string> = []
  for (const entry of entries) {
    const admitted = guard.admit(entry)
    if (Either.isLeft(admitted)) return admitted
    paths.push(admitted.right.path)
  }
  return Either.map(guard.finish(), () => paths)
}
const refusal = (result: Either.Either<unknown, unpack.Refusal>) => Either.isLeft(result) ? result.left : undefined

describe("archive entries (the unpacking rules, at least PEP 706's data filter)", () => {
  it("names are relative paths inside the tree; absolute names, drives, `..`, NUL and backslashes are refused", () => {
    expect(Either.getOrThrow(unpack.pathOf("model/weights.bin"))).toBe("model/weights.bin")
    expect(Either.getOrThrow(unpack.pathOf("./model//config.json"))).toBe("model/config.json")
    for (
      const [name, rule] of [
        ["/etc/passwd", "absolute name"],
        ["C:/Windows/x", "absolute name"],
        ["../outside", "parent reference"],
        ["model/../../outside", "parent reference"],
        ["model/../inside", "parent reference"],
        ["model\\..\\x", "bad name"],
        ["a\0b", "bad name"],
        [".", "bad name"]
      ] as const
    ) {
      expect(refusal(unpack.pathOf(name))).toMatchObject({ entry: name, rule })
    }
  })

  it("only files, folders and links: a device or a FIFO is refused", () => {
    expect(refusal(run([file("a"), { name: "dev/null", type: "other", kind: "character device", size: 0, mode: 0o666 }])))
      .toMatchObject({ entry: "dev/null", rule: "special file", reason: expect.stringContaining("character device") })
    expect(refusal(run([{ name: "pipe", type: "other", kind: "FIFO", size: 0, mode: 0o644 }]))).toMatchObject({ rule: "special file" })
  })

  it("links resolve inside the tree through every link, in any order; absolute, escaping and looping ones are refused", () => {
    // Hugging Face's snapshot layout: a link up and across, to a file listed after it.
    expect(run([symlink("snapshots/r1/model.bin", "../../blobs/abc"), file("blobs/abc")])).toEqual(
      Either.right(["snapshots/r1/model.bin", "blobs/abc"])
    )
    expect(refusal(run([symlink("l", "/etc/passwd")]))).toMatchObject({ entry: "l", rule: "absolute link" })
    expect(refusal(run([symlink("a/l", "../../x")]))).toMatchObject({ entry: "a/l", rule: "link outside the tree" })
    // Read as text, d/x stays inside (d/u/../.. is the root); followed, d/u is the root and x leaves it.
    expect(run([symlink("d/u", "..")])).toEqual(Either.right(["d/u"]))
    expect(refusal(run([symlink("d/u", ".."), symlink("d/x", "u/../..")])))
      .toMatchObject({ entry: "d/x", rule: "link outside the tree" })
    expect(refusal(run([symlink("a", "b"), symlink("b", "a")]))).toMatchObject({ rule: "link outside the tree" })
  })

  it("nothing is written through a link of the archive, nor under a name it made a file", () => {
    expect(refusal(run([symlink("d", "inside"), file("d/passwd")]))).toMatchObject({ entry: "d/passwd", rule: "through a link" })
    expect(refusal(run([file("a"), file("a/b")]))).toMatchObject({ entry: "a/b", rule: "duplicate" })
    expect(refusal(run([file("a/b"), symlink("a", "elsewhere")]))).toMatchObject({ entry: "a", rule: "duplicate" })
    expect(refusal(run([file("x"), file("x")]))).toMatchObject({ entry: "x", rule: "duplicate" })
    expect(run([folder("m"), folder("m/"), file("m/w.bin")])).toEqual(Either.right(["m", "m", "m/w.bin"]))
  })

  it("hard links name a file of the archive inside the tree", () => {
    expect(run([file("a/w.bin"), hardlink("b/w.bin", "a/w.bin")])).toEqual(Either.right(["a/w.bin", "b/w.bin"]))
    expect(refusal(run([hardlink("h", "missing")]))).toMatchObject({ entry: "h", rule: "link to nothing" })
    expect(refusal(run([folder("d"), hardlink("h", "d")]))).toMatchObject({ rule: "link to nothing" })
    expect(refusal(run([hardlink("h", "../x")]))).toMatchObject({ rule: "link outside the tree" })
    expect(refusal(run([hardlink("h", "/etc/shadow")]))).toMatchObject({ rule: "absolute link" })
  })

  it("permissions are masked: no setuid, setgid, sticky or group/other write; owner rw; exec for others only with the owner's", () => {
    expect(unpack.modeOf(file("a", 1, 0o4755))).toBe(0o755)
    expect(unpack.modeOf(file("a", 1, 0o2777))).toBe(0o755)
    expect(unpack.modeOf(file("a", 1, 0o677))).toBe(0o644)
    expect(unpack.modeOf(file("a", 1, 0o000))).toBe(0o600)
    expect(unpack.modeOf(file("a", 1, 0o640))).toBe(0o640)
    expect(unpack.modeOf({ ...folder("d"), mode: 0o1777 })).toBe(0o755)
  })

  it("limits on entries, bytes and ratio refuse a bomb, each naming the option that raises it", () => {
    const few = { ...roomy, maxEntries: 3 }
    expect(refusal(run([file("a"), file("b"), file("c"), file("d")], few)))
      .toMatchObject({ entry: "d", rule: "entries", limit: "unpack_max_entries" })
    const small = { ...roomy, maxBytes: 100 }
    expect(refusal(run([file("a", 60), file("b", 60)], small))).toMatchObject({ entry: "b", rule: "bytes", limit: "unpack_max_bytes" })
    // 10 KiB declared from a 100-byte archive, at most 50 times its size.
    expect(refusal(run([file("zeros", 10 * 1024)], { ...roomy, maxRatio: 50 }, 100)))
      .toMatchObject({ entry: "zeros", rule: "ratio", limit: "unpack_max_ratio" })
    // An archive of unknown size: the bytes written against those read, as they go.
    const guard = unpack.guard({ ...roomy, maxRatio: 50 }, undefined)
    expect(Either.isRight(guard.admit(file("zeros", 10 * 1024)))).toBe(true)
    expect(Either.isRight(guard.unpacked(4000, 100))).toBe(true)
    expect(refusal(guard.unpacked(6000, 100))).toMatchObject({ rule: "ratio", limit: "unpack_max_ratio" })
    expect(refusal(unpack.guard(small, undefined).unpacked(101, 100))).toMatchObject({ rule: "bytes" })
  })
})
