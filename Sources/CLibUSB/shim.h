// The only C header of libusb-1.0 that the USBHost target sees.
#include <libusb.h>

/// libusb_set_option is variadic, which Swift cannot call; this wrapper fixes the argument list.
static inline int clibusb_set_log_level(libusb_context *ctx, int level) {
    return libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, level);
}
