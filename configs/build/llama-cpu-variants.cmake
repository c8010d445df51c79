# Included by llama-cpp-python's build right after its project() call (CMAKE_PROJECT_llama_cpp_INCLUDE,
# set by `make bundle` and `make venv`).
#
# Why: the portable build (GGML_NATIVE=OFF, GGML_BACKEND_DL=ON, GGML_CPU_ALL_VARIANTS=ON) compiles
# one CPU backend per instruction-set level (ggml-cpu-x64, -sse42, -haswell, -icelake, ... on
# x86-64; -armv8.0 ... on aarch64) and picks the best one for the CPU at run time. llama-cpp-python
# installs a fixed list of targets into its wheel that does not name these, so the wheel would
# carry no CPU backend at all. The deferred call runs once the whole directory is processed, when
# llama.cpp's targets exist, and installs every ggml-cpu-* target next to libggml.so, where
# gateway/llama_backends.py loads them from.
cmake_language(DEFER CALL edge_gateway_install_cpu_variants)

function(edge_gateway_install_cpu_variants)
    get_property(targets DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/vendor/llama.cpp/ggml/src"
        PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
        if(target MATCHES "^ggml-cpu-")
            llama_cpp_python_install_target(${target})
        endif()
    endforeach()
endfunction()
