import USBModel

/// Answers a control request the way a USB device controller plus its firmware would: standard
/// requests from the model's descriptors (as the kernel's usbfs host sees them), SET_INTERFACE
/// and class/vendor requests by the model itself.
func answer(_ setup: SetupPacket, data: [UInt8], model: any USBDeviceModel) -> DeviceControlReply {
    let type = setup.requestType & 0x60
    guard type == 0 else { return model.control(setup, data: data) }
    switch (setup.requestType, setup.request) {
    case (USBRequest.standardDeviceIn, USBRequest.getDescriptor):
        return descriptor(
            type: UInt8(setup.value >> 8), index: UInt8(setup.value & 0xFF), language: setup.index, model: model)
    case (USBRequest.standardDeviceIn, USBRequest.getStatus), (USBRequest.standardInterfaceIn, USBRequest.getStatus),
        (0x82, USBRequest.getStatus):
        return .data([0, 0])
    case (USBRequest.standardDeviceIn, USBRequest.getConfiguration):
        return .data([model.configuration.configurationValue])
    case (0x00, USBRequest.setConfiguration):
        return setup.value & 0xFF == UInt16(model.configuration.configurationValue) ? .ack : .stall
    case (USBRequest.standardInterfaceOut, USBRequest.setInterface):
        return model.setInterface(UInt8(setup.index & 0xFF), alternate: UInt8(setup.value & 0xFF)) ? .ack : .stall
    default:
        return .stall
    }
}

private func descriptor(type: UInt8, index: UInt8, language: UInt16, model: any USBDeviceModel) -> DeviceControlReply {
    switch type {
    case DescriptorType.device:
        return .data(model.deviceDescriptor.bytes)
    case DescriptorType.configuration:
        return index == 0 ? .data(model.configuration.bytes) : .stall
    case DescriptorType.string:
        return model.stringDescriptor(index: index, languageID: language).map { .data($0) } ?? .stall
    case DescriptorType.deviceQualifier where model.speed == .high:
        // The same device at the other speed: STM32MP stages describe one configuration either way.
        let d = model.deviceDescriptor
        return .data([
            10, DescriptorType.deviceQualifier, UInt8(d.bcdUSB & 0xFF), UInt8(d.bcdUSB >> 8), d.deviceClass,
            d.deviceSubClass, d.deviceProtocol, d.maxPacketSize0, d.configurationCount, 0,
        ])
    default:
        return .stall
    }
}
