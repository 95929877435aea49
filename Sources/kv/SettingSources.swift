import ArgumentParser

/// Where a `kv server` setting comes from, in order of precedence: its flag, its
/// environment variable, the YAML file, the default.
struct SettingSources {
    /// The process's environment.
    let environment: [String: String]

    /// The setting's value; an environment variable that does not parse is refused.
    func resolve<Value: LosslessStringConvertible>(
        _ flag: Value?, _ variable: String, _ fromFile: Value?, _ fallback: Value
    ) throws -> Value {
        if let flag { return flag }
        if let text = environment[variable] {
            guard let value = Value(text) else { throw ValidationError("\(variable)='\(text)' is not valid") }
            return value
        }
        return fromFile ?? fallback
    }
}
