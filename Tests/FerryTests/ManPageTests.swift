import Foundation
import XCTest

/// The committed man pages (man/*.1, written by `make man`) must describe the binary as it is.
/// Regenerating them here would need the generate-manual plugin and a build of its own, too slow
/// for a test, so this compares them with `ferry CMD --help` instead: every command has a page,
/// each page carries exactly the long options its commands list, with the same defaults, and the
/// same one-line summary. A failure here means: run `make man` and commit man/.
final class ManPageTests: FerryTestCase {
    private var manDir: String { TestPaths.packageRoot + "/man" }

    /// The commands of `ferry WORDS`: the SUBCOMMANDS section of its --help.
    private func subcommands(_ words: [String]) throws -> [String] {
        section("SUBCOMMANDS", of: try help(words)).compactMap { line in
            guard line.hasPrefix("  "), let first = line.dropFirst(2).first, first.isLowercase else { return nil }
            return String(line.dropFirst(2).prefix { $0 != " " })
        }
    }

    private func help(_ words: [String]) throws -> String {
        let r = try ferry(words + ["--help"])
        XCTAssertEqual(r.status, 0, r.summary)
        return r.out
    }

    /// The section headed "NAME:" in a --help text, heading included, up to the next blank line.
    private func section(_ name: String, of text: String) -> [String] {
        let lines = text.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.hasPrefix(name + ":") }) else { return [] }
        return Array(lines[start...].prefix { !$0.isEmpty })
    }

    /// OPTIONS entries of a --help text, each joined onto one line: "  -e, --rsh <cmd>  Remote ...".
    private func optionEntries(_ helpText: String) -> [String] {
        var entries: [String] = []
        for line in section("OPTIONS", of: helpText).dropFirst() {
            if line.hasPrefix("  -") { entries.append(line) }
            else if line.hasPrefix("   "), !entries.isEmpty {
                entries[entries.count - 1] += " " + line.trimmingCharacters(in: .whitespaces)
            }
        }
        return entries
    }

    /// The long option an entry defines: "chunk-size" for "  --chunk-size <size>  ...".
    private func longName(_ entry: String) -> String? {
        guard let r = entry.range(of: #"^  (-[A-Za-z], )?--[a-z0-9-]+"#, options: .regularExpression) else { return nil }
        return entry[r].split(separator: " ").last.map { String($0.dropFirst(2)) }
    }

    /// The long options a man page documents as items: `.It Fl -chunk-size Ar size` or
    /// `.It Fl e , -rsh Ar cmd` (Fl adds one dash, so "-rsh" is --rsh).
    private func manOptions(_ page: String) -> Set<String> {
        var names = Set<String>()
        for line in page.components(separatedBy: "\n") where line.hasPrefix(".It Fl ") {
            for word in line.split(separator: " ").dropFirst(2).prefix(while: { $0 != "Ar" }) where word.hasPrefix("-") {
                names.insert(String(word.dropFirst()))
            }
        }
        return names
    }

    /// The page's text with mdoc escapes and line breaks flattened, for substring checks.
    private func flat(_ page: String) -> String {
        page.replacingOccurrences(of: "\\&", with: "")
            .components(separatedBy: .whitespacesAndNewlines).filter { !$0.isEmpty }.joined(separator: " ")
    }

    private func flat(_ lines: [String]) -> String {
        lines.joined(separator: " ").components(separatedBy: .whitespaces).filter { !$0.isEmpty }.joined(separator: " ")
    }

    func testEveryCommandHasAManPageThatMatchesItsHelp() throws {
        var pages: [(file: String, commands: [[String]])] = [("ferry.1", [[]])]
        for command in try subcommands([]) {
            pages.append(("ferry-\(command).1", [[command]] + (try subcommands([command])).map { [command, $0] }))
        }
        XCTAssertGreaterThan(pages.count, 5, "ferry --help lists fewer commands than expected")

        for (file, commands) in pages {
            let path = manDir + "/" + file
            guard let page = try? String(contentsOfFile: path, encoding: .utf8) else {
                XCTFail("\(file) is missing: run `make man` and commit man/")
                continue
            }
            let text = flat(page)
            var helpOptions = Set<String>()
            for words in commands {
                let name = (["ferry"] + words).joined(separator: " ")
                let helpText = try help(words)
                // The one-line summary: "OVERVIEW: ..." up to the blank line.
                let overview = flat(section("OVERVIEW", of: helpText))
                XCTAssertTrue(overview.hasPrefix("OVERVIEW: "), "`\(name) --help` has no OVERVIEW")
                let summary = String(overview.dropFirst("OVERVIEW: ".count))
                XCTAssertTrue(text.contains(summary), "\(file) lacks the summary of `\(name)`: \(summary)")

                for entry in optionEntries(helpText) {
                    guard let option = longName(entry) else { continue }
                    helpOptions.insert(option)
                    if let r = entry.range(of: #"\((default|values): [^()]*\)$"#, options: .regularExpression) {
                        XCTAssertTrue(text.contains(String(entry[r])),
                                      "\(file) does not show --\(option)'s \(entry[r]) from `\(name) --help`")
                    }
                }
            }
            let documented = manOptions(page)
            for missing in helpOptions.subtracting(documented).sorted() {
                XCTFail("\(file) does not document --\(missing), which `--help` lists: run `make man`")
            }
            for stale in documented.subtracting(helpOptions).sorted() {
                XCTFail("\(file) documents --\(stale), which ferry no longer has: run `make man`")
            }
        }
    }
}
