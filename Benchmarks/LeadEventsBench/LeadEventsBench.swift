import Foundation
import LeadEvents

/// Events per second on one core for decode + validate + dedupe key, on a typical ~500-byte valid
/// structured event and on the same lead sent plain (which adds SHA-256 of the canonical JSON).
/// Prints one JSON line.
@main
enum LeadEventsBench {
    static let lead = """
        {"firstName":"Jane","lastName":"Doe","gender":"FEMALE","email":"jane.doe@example.com","language":"FR",\
        "phoneNumbers":[{"number":"+33 6 12 34 56 78","type":"MOBILE"},{"number":"01.23.45.67.89","type":"LANDLINE"}],\
        "message":"Bonjour, je suis intéressée par cet appartement. Pouvez-vous me rappeler après 18 h ?",\
        "classifiedId":"12ABCDEFGHJK","submittedDate":"2025-03-14T09:26:53+01:00"}
        """
    static let structured = """
        {"specversion":"1.0","id":"3f7b2a9e-1c4d-4e8f-9a6b-2d5c8e1f0a3b","source":"/portals/seloger/fr",\
        "type":"lead.submitted","time":"2025-03-14T08:26:54.120Z","datacontenttype":"application/json",\
        "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":\(lead)}
        """

    static func eventsPerSecond(_ value: [UInt8], seconds: Double) -> (rate: Double, keys: Int) {
        let decoder = LeadEventDecoder()
        var processed = 0
        var keyBytes = 0
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = start + UInt64(seconds * 1e9)
        var now = start
        while now < deadline {
            for _ in 0..<1000 {
                if case .success(let event) = decoder.decode(key: nil, value: value, headers: []) {
                    keyBytes &+= event.dedupeKey.utf8.count
                }
            }
            processed += 1000
            now = DispatchTime.now().uptimeNanoseconds
        }
        return (Double(processed) / (Double(now - start) / 1e9), keyBytes)
    }

    static func main() {
        let seconds = Double(CommandLine.arguments.dropFirst().first ?? "") ?? 3
        let structuredBytes = Array(structured.utf8)
        let plainBytes = Array(lead.utf8)
        _ = eventsPerSecond(structuredBytes, seconds: 0.3)
        let structuredRun = eventsPerSecond(structuredBytes, seconds: seconds)
        let plainRun = eventsPerSecond(plainBytes, seconds: seconds)
        // Keys were produced for every event; printing their total keeps the work from being optimised away.
        print(
            #"{"benchmark":"lead-events decode+validate+dedupe-key","structuredEventBytes":\#(structuredBytes.count),"#
                + #""structuredEventsPerSecond":\#(Int(structuredRun.rate)),"plainEventBytes":\#(plainBytes.count),"#
                + #""plainEventsPerSecond":\#(Int(plainRun.rate)),"keyBytes":\#(structuredRun.keys &+ plainRun.keys)}"#)
    }
}
