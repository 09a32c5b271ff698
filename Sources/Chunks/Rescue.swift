import Glibc

/// A range of bytes of an image: [offset, offset + length).
public struct ByteRange: Codable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) { (self.offset, self.length) = (offset, length) }
    public init(_ r: Range<UInt64>) { (offset, length) = (r.lowerBound, r.upperBound - r.lowerBound) }
    public var end: UInt64 { offset + length }
    public var range: Range<UInt64> { offset..<end }
    public var description: String { "bytes \(offset)-\(end - 1)" }

    /// Sorted, with touching or overlapping ranges merged.
    public static func merged(_ ranges: [ByteRange]) -> [ByteRange] {
        var out: [ByteRange] = []
        for r in ranges.filter({ $0.length > 0 }).sorted(by: { $0.offset < $1.offset }) {
            if let last = out.last, r.offset <= last.end {
                out[out.count - 1].length = max(last.end, r.end) - last.offset
            } else {
                out.append(r)
            }
        }
        return out
    }

    /// The parts of `ranges` inside `window`.
    public static func clipped(_ ranges: [ByteRange], to window: Range<UInt64>) -> [ByteRange] {
        ranges.compactMap { r in
            let lo = max(r.offset, window.lowerBound), hi = min(r.end, window.upperBound)
            return lo < hi ? ByteRange(lo..<hi) : nil
        }
    }

    public static func total(_ ranges: [ByteRange]) -> UInt64 { ranges.reduce(0) { $0 + $1.length } }
}

/// Reads around unreadable sectors of a failing source, as ddrescue does on its first pass.
///
/// A read that the medium fails is narrowed by halving down to one sector (the device's logical
/// sector, or a page for a file), so every readable byte before the first bad sector is kept.
/// From there it skips ahead: it probes single sectors at doubling distances (up to `maxSkip`)
/// until one reads, then halves the last gap to find where the bad stretch ends. A contiguous
/// bad stretch of N sectors so costs about 2·log2(N) failed reads instead of N, and its edges are
/// exact to the sector; readable sectors inside a stretch that the probes jumped over are
/// recorded as unreadable, and `ferry resend` tries them again. No sector is retried on this
/// pass unless `retries` asks for it. Unreadable bytes are returned as zeros.
public final class Rescue {
    public let file: ImageFile
    public let sector: Int
    /// The end of the image: probes never go past it.
    let limit: UInt64
    /// The largest skip between probes.
    public var maxSkip: UInt64 = 64 << 20
    private let scratch: AlignedBuffer
    /// Bad stretches the probes found beyond the range being read: the next ranges use them
    /// without reading again.
    private var ahead: [ByteRange] = []
    public private(set) var reads = 0
    public private(set) var failedReads = 0
    public private(set) var bytesRead: UInt64 = 0

    public init(file: ImageFile, size: UInt64) {
        self.file = file
        sector = file.sectorSize
        limit = size
        scratch = AlignedBuffer(capacity: max(sector, 4096))
    }

    /// Whether the probes already found bytes in `window` unreadable (a stretch that began in an
    /// earlier range): the range is then read around them without failing on them again.
    public func knowsBad(in window: Range<UInt64>) -> Bool {
        ahead.contains { $0.offset < window.upperBound && $0.end > window.lowerBound }
    }

    /// The errors a failing medium gives for a sector it cannot read: EIO, ENODATA (a medium
    /// error, as the block layer reports it) and EILSEQ (a protection check failed). Anything
    /// else (a vanished device, a permission change, an interruption) ends the copy.
    public static func isMediumError(_ e: any Error) -> Bool {
        guard let f = e as? FerryError, f.code == .io, case .errno(let err) = f.cause else { return false }
        return err == EIO || err == ENODATA || err == EILSEQ
    }

    /// Fills `buffer` with [offset, offset + count): every byte that reads, zeros for the ones
    /// that do not. Returns the unreadable ranges (sorted, merged, inside the range).
    /// `retries`: how many more times each unreadable range is tried after the first pass.
    /// `confined`: read nothing outside the range (no probe past its end, no stretch carried to
    /// the next range): a resend's retry of one recorded range.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64, retries: Int,
                     confined: Bool = false) throws -> [ByteRange] {
        let lo = offset, hi = offset + UInt64(count)
        var bad = try pass(buffer: buffer, base: lo, lo: lo, hi: hi, probeLimit: confined ? hi : limit, useAhead: !confined)
        var round = 0
        while round < retries && !bad.isEmpty {
            round += 1
            var still: [ByteRange] = []
            for r in bad {
                still += try pass(buffer: buffer, base: lo, lo: r.offset, hi: r.end, probeLimit: r.end, useAhead: false)
            }
            bad = ByteRange.merged(still)
        }
        for r in bad { memset(buffer + Int(r.offset - lo), 0, Int(r.length)) }
        return bad
    }

    private enum Attempt { case read, unreadable }

    /// One read of [at, at + count) into `into`; medium errors are an answer, other errors throw.
    private func attempt(_ into: UnsafeMutableRawPointer, _ count: Int, _ at: UInt64) throws -> Attempt {
        try Interrupts.check()
        reads += 1
        switch file.readExact(into: into, count: count, at: at) {
        case .success(let n):
            bytesRead += UInt64(n)
            guard n == count else {
                throw FerryError(.io, "source \(file.path) ended at offset \(at + UInt64(n)), inside a range it held when the copy began",
                                 hint: "the source shrank while being read; nothing was marked complete")
            }
            return .read
        case .failure(let e):
            guard Self.isMediumError(e) else { throw e }
            failedReads += 1
            return .unreadable
        }
    }

    private func alignDown(_ v: UInt64) -> UInt64 { v - v % UInt64(sector) }

    /// The first pass over [lo, hi): `buffer` holds the bytes from `base`.
    private func pass(buffer: UnsafeMutableRawPointer, base: UInt64, lo: UInt64, hi: UInt64, probeLimit: UInt64,
                      useAhead: Bool) throws -> [ByteRange] {
        var bad: [ByteRange] = []
        var pos = lo
        let s = UInt64(sector)
        while pos < hi {
            if useAhead, let k = ahead.first(where: { $0.offset <= pos && pos < $0.end }) {
                let e = min(k.end, hi)
                bad.append(ByteRange(pos..<e))
                pos = e
                continue
            }
            var stop = hi
            if useAhead, let next = ahead.filter({ $0.offset > pos && $0.offset < hi }).map(\.offset).min() { stop = next }
            if try attempt(buffer + Int(pos - base), Int(stop - pos), pos) == .read {
                pos = stop
                continue
            }
            // Narrow to the first bad sector: [a, b) fails, [pos, a) has been read.
            var a = pos, b = stop
            while b - a > s {
                var mid = a + alignDown((b - a) / 2)
                if mid <= a { mid = a + s }
                if try attempt(buffer + Int(a - base), Int(mid - a), a) == .read { a = mid } else { b = mid }
            }
            // One sector left: if it reads now, the failure was elsewhere or passing.
            if try attempt(buffer + Int(a - base), Int(b - a), a) == .read {
                pos = b
                continue
            }
            let end = try stretchEnd(from: a, badEnd: b, probeLimit: probeLimit)
            bad.append(ByteRange(a..<min(end, hi)))
            if end > hi && useAhead { ahead.append(ByteRange(hi..<end)) }
            pos = min(end, hi)
        }
        if useAhead { ahead.removeAll { $0.end <= hi } }
        return ByteRange.merged(bad)
    }

    /// Where a bad stretch that begins at sector `first` ends: probes single sectors at doubling
    /// distances until one reads, then halves the gap between the last bad and the first good one.
    private func stretchEnd(from first: UInt64, badEnd: UInt64, probeLimit: UInt64) throws -> UInt64 {
        let s = UInt64(sector)
        // The last sector before the limit: a skip that would pass it probes there instead, so
        // good bytes near the end are never written off unread.
        let lastSector = alignDown(probeLimit - 1)
        var lastBad = first
        var step = s
        while true {
            let probe = min(lastBad + step, lastSector)
            if probe <= lastBad { return probeLimit }
            let n = Int(min(s, probeLimit - probe))
            if try attempt(scratch.pointer, n, probe) == .read {
                var badAt = lastBad, good = probe
                while good - badAt > s {
                    let mid = badAt + max(s, alignDown((good - badAt) / 2))
                    if try attempt(scratch.pointer, Int(min(s, probeLimit - mid)), mid) == .read { good = mid } else { badAt = mid }
                }
                return good
            }
            lastBad = probe
            step = min(step * 2, max(s, maxSkip))
        }
    }
}
