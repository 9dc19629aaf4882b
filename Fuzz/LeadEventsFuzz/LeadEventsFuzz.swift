import LeadEvents

/// libFuzzer entry point: decode + validate every input in the three shapes, and check that an
/// accepted lead survives a round trip through its canonical JSON with the same dedupe key.
@_cdecl("LLVMFuzzerTestOneInput")
public func leadEventsFuzzOneInput(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: count))
    let decoder = LeadEventDecoder(maxEventBytes: 4096)
    // The first byte, when there is one, chooses headers so binary mode and header decoding get fuzzed too.
    let selector = bytes.first ?? 0
    var headers: [(key: String, value: [UInt8]?)] = []
    if selector & 1 == 1 {
        let split = min(bytes.count, Int(selector >> 1) % 24)
        headers = [
            ("ce_specversion", Array("1.0".utf8)), ("ce_id", Array(bytes.prefix(split))),
            ("ce_source", selector & 2 == 0 ? Array("/fuzz".utf8) : nil), ("ce_type", Array("lead.submitted".utf8)),
            ("traceparent", Array(bytes.suffix(split))),
        ]
    }
    for candidate in [bytes, Array(bytes.dropFirst())] {
        if case .success(let event) = decoder.decode(key: nil, value: candidate, headers: headers) {
            let canonical = event.request.canonicalJSON()
            guard case .success(let again) = decoder.decode(key: nil, value: canonical, headers: []),
                again.request == event.request,
                again.request.canonicalJSON() == canonical
            else {
                preconditionFailure("an accepted lead does not survive its canonical JSON")
            }
        }
        _ = LeadRequestValidator.violations(inRequestBody: candidate)
    }
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// SwiftPM links executables with `main` aliased to `<module>_main`, which would hide libFuzzer's own
/// `main`; this entry point hands control to libFuzzer's driver instead.
@_cdecl("lead_events_fuzz_main")
public func leadEventsFuzzMain(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var argumentCount = argc
    var arguments = argv
    return runFuzzerDriver(&argumentCount, &arguments, leadEventsFuzzOneInput)
}
