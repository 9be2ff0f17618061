// Runs a fuzz target over files, as a plain test in every build: its seed
// corpus and the inputs that once made it fail (regressions/NAME), so that
// what a fuzzer found stays fixed without clang.
//
//   fuzz_replay_config tests/fuzz/corpus/config tests/fuzz/regressions/config
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    std::error_code error;
    if (fs::is_directory(argv[i], error)) {
      for (const auto& entry : fs::directory_iterator(argv[i])) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
    } else if (fs::is_regular_file(argv[i], error)) {
      files.emplace_back(argv[i]);
    }  // A folder not made yet (no regressions so far) holds nothing.
  }
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)),
                            std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                           bytes.size());
  }
  std::cout << "ran " << files.size() << " inputs" << std::endl;
  return files.empty() ? 1 : 0;  // No seeds: the test would prove nothing.
}
