// The only C header of libumockdev that the board emulator sees, plus the usbfs ABI it emulates.
#include <stddef.h>
#include <umockdev.h>
#include <sys/ioctl.h>
#include <linux/usbdevice_fs.h>

// usbfs ioctl request numbers are function-like macros, which Swift cannot import.
static const unsigned long CUMOCKDEV_USBDEVFS_SUBMITURB = USBDEVFS_SUBMITURB;
static const unsigned long CUMOCKDEV_USBDEVFS_REAPURB = USBDEVFS_REAPURB;
static const unsigned long CUMOCKDEV_USBDEVFS_REAPURBNDELAY = USBDEVFS_REAPURBNDELAY;
static const unsigned long CUMOCKDEV_USBDEVFS_DISCARDURB = USBDEVFS_DISCARDURB;
static const unsigned long CUMOCKDEV_USBDEVFS_GET_CAPABILITIES = USBDEVFS_GET_CAPABILITIES;
static const unsigned long CUMOCKDEV_USBDEVFS_CLAIMINTERFACE = USBDEVFS_CLAIMINTERFACE;
static const unsigned long CUMOCKDEV_USBDEVFS_RELEASEINTERFACE = USBDEVFS_RELEASEINTERFACE;
static const unsigned long CUMOCKDEV_USBDEVFS_SETINTERFACE = USBDEVFS_SETINTERFACE;
static const unsigned long CUMOCKDEV_USBDEVFS_SETCONFIGURATION = USBDEVFS_SETCONFIGURATION;
static const unsigned long CUMOCKDEV_USBDEVFS_GETDRIVER = USBDEVFS_GETDRIVER;
static const unsigned long CUMOCKDEV_USBDEVFS_IOCTL = USBDEVFS_IOCTL;
static const unsigned long CUMOCKDEV_USBDEVFS_RESET = USBDEVFS_RESET;
static const unsigned long CUMOCKDEV_USBDEVFS_CLEAR_HALT = USBDEVFS_CLEAR_HALT;
static const unsigned long CUMOCKDEV_USBDEVFS_DISCONNECT_CLAIM = USBDEVFS_DISCONNECT_CLAIM;
static const unsigned long CUMOCKDEV_USBDEVFS_CONNECTINFO = USBDEVFS_CONNECTINFO;
static const unsigned long CUMOCKDEV_USBDEVFS_GET_SPEED = USBDEVFS_GET_SPEED;
static const unsigned long CUMOCKDEV_USBDEVFS_CONTROL = USBDEVFS_CONTROL;

// Field offsets of the usbfs structs, so Swift never hard-codes the ABI.
static const size_t CUMOCKDEV_URB_SIZE = sizeof(struct usbdevfs_urb);
static const size_t CUMOCKDEV_URB_TYPE = offsetof(struct usbdevfs_urb, type);
static const size_t CUMOCKDEV_URB_STATUS = offsetof(struct usbdevfs_urb, status);
static const size_t CUMOCKDEV_URB_BUFFER = offsetof(struct usbdevfs_urb, buffer);
static const size_t CUMOCKDEV_URB_BUFFER_LENGTH = offsetof(struct usbdevfs_urb, buffer_length);
static const size_t CUMOCKDEV_URB_ACTUAL_LENGTH = offsetof(struct usbdevfs_urb, actual_length);
static const size_t CUMOCKDEV_URB_ENDPOINT = offsetof(struct usbdevfs_urb, endpoint);
static const unsigned char CUMOCKDEV_URB_TYPE_CONTROL = USBDEVFS_URB_TYPE_CONTROL;
static const unsigned char CUMOCKDEV_URB_TYPE_BULK = USBDEVFS_URB_TYPE_BULK;
static const size_t CUMOCKDEV_CTRLTRANSFER_SIZE = sizeof(struct usbdevfs_ctrltransfer);
static const size_t CUMOCKDEV_CTRLTRANSFER_DATA = offsetof(struct usbdevfs_ctrltransfer, data);
// What an xHCI host reports: with BULK_SCATTER_GATHER libusb submits a bulk transfer as one URB
// (without it, 16 KiB URBs with BULK_CONTINUATION).
static const unsigned int CUMOCKDEV_CAPABILITIES =
    USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
    USBDEVFS_CAP_BULK_SCATTER_GATHER | USBDEVFS_CAP_REAP_AFTER_DISCONNECT;

typedef gboolean (*cumockdev_ioctl_handler)(UMockdevIoctlBase *base, UMockdevIoctlClient *client, gpointer user_data);

// g_signal_connect is a macro; this gives it a typed signature for the "handle-ioctl" signal.
static inline gulong cumockdev_connect_ioctl_handler(UMockdevIoctlBase *base, cumockdev_ioctl_handler handler, gpointer user_data) {
    return g_signal_connect(base, "handle-ioctl", G_CALLBACK(handler), user_data);
}
