// The state of a libtorch optimizer (what torch::optim::Optimizer::save writes: per parameter,
// Adam's moments and step, SGD's momentum buffer; the parameter groups' options) to bytes and
// back. tch drives libtorch's optimizers but offers no access to their state, which a checkpoint
// needs. Errors are returned as malloc'd messages, as libtch returns its own.
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

namespace {
char* message(const std::exception& e) { return strdup(e.what()); }
}  // namespace

// Writes `opt`'s state to a buffer allocated with malloc (`*data`, `*size`); null on success.
extern "C" char* shallow_optimizer_save(torch::optim::Optimizer* opt, char** data, size_t* size) {
  try {
    torch::serialize::OutputArchive archive;
    opt->save(archive);
    std::ostringstream out;
    archive.save_to(out);
    const std::string bytes = out.str();
    *data = static_cast<char*>(std::malloc(bytes.size()));
    if (*data == nullptr) return strdup("out of memory saving the optimizer's state");
    std::memcpy(*data, bytes.data(), bytes.size());
    *size = bytes.size();
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// Replaces `opt`'s state with what shallow_optimizer_save wrote for an optimizer of the same
// kind over parameters of the same shapes, in the same order; null on success.
extern "C" char* shallow_optimizer_load(torch::optim::Optimizer* opt, const char* data,
                                        size_t size) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(data, size);
    opt->load(archive);
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}
