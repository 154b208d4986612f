package import DfuSe

/// What `mcu write` will do with an image on one memory: which sectors it erases (only those the
/// data touches) and which runs it writes. Built before anything is sent, so a file that does not
/// fit is refused with the addresses, and nothing is erased.
package struct MCUWritePlan: Sendable, Hashable {
    package struct Run: Sendable, Hashable {
        package var segment: MCUSegment
        /// The alternate setting of the memory that holds it.
        package var alternate: UInt8
    }

    package var runs: [Run]
    /// Sectors to erase, in address order (each once, even when several runs touch it).
    package var erase: [DfuSeSector]

    package var byteCount: Int { runs.reduce(0) { $0 + $1.segment.bytes.count } }

    /// Plans `image` onto the device's memories (`maps[alt]` is alternate `alt`'s map). Data goes to
    /// the alternate a DfuSe file names, else to the one whose map covers it.
    /// - Throws: `MCUPlanError` naming the first address outside every map, or a sector that is
    ///   not writable.
    package init(image: MCUImage, maps: [DfuSeMemoryMap?]) throws(MCUPlanError) {
        var runs: [Run] = []
        var erase: [DfuSeSector] = []
        for segment in image.segments {
            let candidates: [(Int, DfuSeMemoryMap)] = maps.enumerated().compactMap { index, map in
                guard let map else { return nil }
                if let wanted = segment.alternate, Int(wanted) != index { return nil }
                return (index, map)
            }
            guard
                let (index, map) = candidates.first(where: {
                    $0.1.firstUncovered(segment.address, length: UInt64(segment.bytes.count)) == nil
                })
            else {
                let best = candidates.first { $0.1.sector(containing: segment.address) != nil } ?? candidates.first
                let uncovered = best.flatMap {
                    $0.1.firstUncovered(segment.address, length: UInt64(segment.bytes.count))
                }
                throw MCUPlanError(
                    segment: segment, firstBadAddress: uncovered ?? segment.address,
                    reason: .outside(maps: candidates.map(\.1)))
            }
            let sectors = map.sectors(overlapping: segment.address, length: UInt64(segment.bytes.count))
            if let locked = sectors.first(where: { !$0.writable }) {
                throw MCUPlanError(
                    segment: segment, firstBadAddress: max(UInt64(locked.address), segment.address),
                    reason: .notWritable(locked, mapName: map.name))
            }
            runs.append(Run(segment: segment, alternate: UInt8(index)))
            for sector in sectors where sector.erasable && !erase.contains(sector) { erase.append(sector) }
        }
        self.runs = runs
        self.erase = erase.sorted { $0.address < $1.address }
    }
}

/// A file that does not fit the device.
package struct MCUPlanError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Reason: Sendable, Hashable {
        case outside(maps: [DfuSeMemoryMap])
        case notWritable(DfuSeSector, mapName: String)
    }

    package var segment: MCUSegment
    package var firstBadAddress: UInt64
    package var reason: Reason

    package var description: String {
        let range = "\(address(segment.address))–\(address(segment.end - 1))"
        switch reason {
        case .outside(let maps):
            let known = maps.map { "\($0.name) \(address(UInt64($0.start)))–\(address($0.end - 1))" }
            return
                "data at \(range) does not fit the device: \(address(firstBadAddress)) is outside every memory (\(known.joined(separator: "; ")))"
        case .notWritable(let sector, let name):
            return
                "data at \(range) touches the \(name) sector \(address(UInt64(sector.address)))–\(address(sector.end - 1)), which the bootloader marks not writable"
        }
    }
}
