/**
 * The errors of the `mlup-storage` command line that are not a storage's: a
 * config file that cannot be read or has the wrong shape, and a selection the
 * command line cannot fetch.
 *
 * @since 0.3.0
 */
import * as Schema from "effect/Schema"

/**
 * A config file (`--config`) could not be read, parsed, or does not hold a
 * storage selection where one is expected (at the top level, or in mlup's
 * `ml` section).
 *
 * @since 0.3.0
 * @category errors
 */
export class ConfigFileError extends Schema.TaggedError<ConfigFileError>("mlup-storage/ConfigFileError")(
  "ConfigFileError",
  {
    path: Schema.String,
    reason: Schema.String,
    cause: Schema.optional(Schema.Defect)
  }
) {
  /**
   * @since 0.3.0
   */
  override get message(): string {
    return `The config file ${this.path} ${this.reason}`
  }
}

/**
 * A command-line argument that is not usable as given (`--kwargs` that is not
 * a JSON object, a selection of the memory storage, which lives in a process's
 * memory and cannot be fetched).
 *
 * @since 0.3.0
 * @category errors
 */
export class InvalidArgument extends Schema.TaggedError<InvalidArgument>("mlup-storage/InvalidArgument")(
  "InvalidArgument",
  {
    argument: Schema.String,
    reason: Schema.String
  }
) {
  /**
   * @since 0.3.0
   */
  override get message(): string {
    return `${this.argument}: ${this.reason}`
  }
}

/**
 * Every error of the command line besides the storages' own.
 *
 * @since 0.3.0
 * @category errors
 */
export type CliError = ConfigFileError | InvalidArgument
