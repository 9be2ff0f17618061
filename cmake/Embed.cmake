# arbiter_embed_files(OUT_CC BASE_DIR FILES...): generates a .cc file that
# holds the given files' contents, so the binary can start without them.
function(arbiter_embed_files out_cc base_dir)
  set(files ${ARGN})
  add_custom_command(
    OUTPUT ${out_cc}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out_cc} -DBASE=${base_dir}
            "-DFILES=${files}" -P ${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake
    DEPENDS ${files} ${PROJECT_SOURCE_DIR}/cmake/EmbedScript.cmake
    COMMENT "Embedding ${base_dir}"
    VERBATIM)
endfunction()
