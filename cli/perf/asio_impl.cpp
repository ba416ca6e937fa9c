// Asio compiled once for sluice-perf (BOOST_ASIO_SEPARATE_COMPILATION is set
// for the sluice-perf target): the tool does not link sluice_net, so it does
// not depend on the broker's libraries.
#include <boost/asio/impl/src.hpp>
