import CRdKafka

extension RDKafkaClient {
    /// Enqueues one message; its delivery report resumes `continuation`, unless this throws.
    func produce(
        topic: String,
        partition: Int32?,
        key: [UInt8]?,
        value: [UInt8]?,
        headers: [KafkaHeader],
        delivery: PendingDelivery
    ) throws {
        let headerList = rd_kafka_headers_new(headers.count)!
        for header in headers {
            Self.withBytes(header.value) { pointer, count in
                _ = rd_kafka_header_add(headerList, header.key, -1, pointer, count)
            }
        }
        let opaque = Unmanaged.passRetained(delivery).toOpaque()
        let error = topic.withCString { topicName in
            Self.withBytes(key) { keyPointer, keyCount in
                Self.withBytes(value) { valuePointer, valueCount in
                    var fields = [rd_kafka_vu_t](repeating: rd_kafka_vu_t(), count: 7)
                    fields[0].vtype = RD_KAFKA_VTYPE_TOPIC
                    fields[0].u.cstr = topicName
                    fields[1].vtype = RD_KAFKA_VTYPE_PARTITION
                    fields[1].u.i32 = partition ?? RD_KAFKA_PARTITION_UA
                    fields[2].vtype = RD_KAFKA_VTYPE_KEY
                    fields[2].u.mem.ptr = UnsafeMutableRawPointer(mutating: keyPointer)
                    fields[2].u.mem.size = keyCount
                    fields[3].vtype = RD_KAFKA_VTYPE_VALUE
                    fields[3].u.mem.ptr = UnsafeMutableRawPointer(mutating: valuePointer)
                    fields[3].u.mem.size = valueCount
                    fields[4].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    fields[4].u.i = RD_KAFKA_MSG_F_COPY
                    fields[5].vtype = RD_KAFKA_VTYPE_OPAQUE
                    fields[5].u.ptr = opaque
                    fields[6].vtype = RD_KAFKA_VTYPE_HEADERS
                    fields[6].u.headers = headerList
                    return rd_kafka_produceva(handle, fields, fields.count)
                }
            }
        }
        if let error {
            // On failure neither the opaque nor the headers were taken over.
            Unmanaged<PendingDelivery>.fromOpaque(opaque).release()
            rd_kafka_headers_destroy(headerList)
            throw RDKafkaClient.kafkaError(consuming: error, context: "produce to \(topic)")
        }
    }

    /// A nil array is passed as a null pointer; an empty one as a valid pointer with count 0, because
    /// librdkafka tells null from empty by the pointer.
    private static func withBytes<Result>(
        _ bytes: [UInt8]?,
        _ body: (UnsafeRawPointer?, Int) -> Result
    ) -> Result {
        guard let bytes else { return body(nil, 0) }
        if bytes.isEmpty {
            var placeholder: UInt8 = 0
            return withUnsafeBytes(of: &placeholder) { body($0.baseAddress, 0) }
        }
        return bytes.withUnsafeBytes { body($0.baseAddress, $0.count) }
    }

    /// Serves delivery reports, errors and logs.
    func poll(timeoutMilliseconds: Int32) {
        rd_kafka_poll(handle, timeoutMilliseconds)
    }

    func flush(timeoutMilliseconds: Int32) throws {
        try Self.check(rd_kafka_flush(handle, timeoutMilliseconds), "flush")
    }

    /// Fails every message not yet delivered: their reports (`_PURGE_QUEUE`/`_PURGE_INFLIGHT`) follow on poll.
    func purgeUndelivered() {
        _ = rd_kafka_purge(handle, Int32(RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT))
    }

    var outstandingMessages: Int32 { rd_kafka_outq_len(handle) }

    /// Whether a broker answers a metadata request within the timeout. Blocks.
    func canReachBroker(timeoutMilliseconds: Int32) -> Bool {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let error = rd_kafka_metadata(handle, 0, nil, &metadata, timeoutMilliseconds)
        defer {
            if let metadata { rd_kafka_metadata_destroy(metadata) }
        }
        return error == RD_KAFKA_RESP_ERR_NO_ERROR && (metadata?.pointee.broker_cnt ?? 0) > 0
    }
}
